"""The static files storage: WhiteNoise's compressed manifest storage, and a page that still renders before
`collectstatic` has run.

After `collectstatic`, `{% static %}` names each file by its content hash (cached for a year, `immutable`) and
WhiteNoise serves its gzip copy. Without a manifest (a fresh checkout), or for a file the manifest does not
know (a release that added one since the last `collectstatic`), Django's manifest storage raises ValueError,
and every admin page would be a 500: the plain name is used instead, which WhiteNoise serves from the app's
folder (WHITENOISE_USE_FINDERS).
"""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    def stored_name(self, name: str) -> str:
        try:
            return super().stored_name(name)
        except ValueError:  # "Missing staticfiles manifest entry", or the file missing from STATIC_ROOT
            return name
