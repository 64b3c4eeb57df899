"""What every benchmark starts with: a throwaway folder and SQLite database (or BENCH_DATABASE_URL, an empty
database), Django set up and migrated."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def prepare(prefix: str) -> Path:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.pop("DATABASE_URL", None)
    if os.environ.get("BENCH_DATABASE_URL"):  # an empty database of the bench's own
        os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]
    os.environ.update({"VAR_DIR": str(work), "DJANGO_SETTINGS_MODULE": "config.settings.base", "LOG_LEVEL": "error"})
    sys.path.insert(0, str(ROOT))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return work
