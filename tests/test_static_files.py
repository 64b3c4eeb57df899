"""Static files in every mode: the storage names a file by its hash once collectstatic has run, and by its plain
name before (or for a file the manifest does not know), which the web process still serves, DEBUG off."""

from __future__ import annotations

import pytest
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.management import call_command
from django.utils.functional import empty
from django.templatetags.static import static
from django.test import Client


@pytest.fixture
def static_root(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"  # Django's setting_changed builds the storage anew over it
    return settings.STATIC_ROOT


def test_before_collectstatic_a_page_names_the_plain_file_and_the_web_serves_it(settings, static_root, db):
    settings.DEBUG = False
    settings.WHITENOISE_USE_FINDERS = True
    assert static("admin/css/base.css") == "/static/admin/css/base.css"
    answer = Client().get("/static/admin/css/base.css")
    assert answer.status_code == 200
    assert b"".join(answer.streaming_content).startswith(b"/*")
    login = Client().get("/admin/login/")
    assert login.status_code == 200 and b"/static/admin/css/base.css" in login.content


def test_after_collectstatic_a_page_names_the_hashed_file_served_compressed_and_cached(settings, static_root, db):
    settings.DEBUG = False
    call_command("collectstatic", "--noinput", verbosity=0)
    staticfiles_storage._wrapped = empty  # built before the manifest was there: read it now, as a new process does
    hashed = static("admin/css/base.css")
    assert hashed.startswith("/static/admin/css/base.") and hashed != "/static/admin/css/base.css"
    answer = Client().get(hashed, HTTP_ACCEPT_ENCODING="gzip")
    assert answer.status_code == 200
    assert answer["Content-Encoding"] == "gzip"
    assert "immutable" in answer["Cache-Control"]
    # A file the manifest does not know (a release added it after the last collectstatic): its plain name.
    assert static("operations/not-collected-yet.css") == "/static/operations/not-collected-yet.css"
