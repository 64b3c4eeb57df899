"""What `make run` serves, in a real browser, exactly as the README starts it: DEBUG off, the web process serving
its own static files (WhiteNoise after collectstatic). The admin is styled and its scripts run; the API's docs
render; the static files come hashed, compressed and cached for a year."""

from __future__ import annotations

import re
import urllib.request

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import Page, expect

from tests.browser.conftest import collect_errors, log_in, shot
from tests.factories import OperationFactory

pytestmark = [pytest.mark.process, pytest.mark.django_db(transaction=True)]


def test_make_run_serves_a_styled_admin_and_the_api_docs_with_debug_off(make_run, make_run_page: Page, admin_user):
    page = make_run_page
    errors = collect_errors(page, make_run.url)
    # Hashed as the base settings hash (the test settings' fast hasher is unknown to them).
    hasher = PBKDF2PasswordHasher()
    admin_user.password = hasher.encode("secret-pass", hasher.salt())
    admin_user.save(update_fields=["password"])
    operation = OperationFactory()

    page.goto("/admin/login/")
    stylesheet = page.locator('link[rel="stylesheet"][href*="admin/css/base."]')
    href = stylesheet.get_attribute("href")
    assert re.search(r"/static/admin/css/base\.[0-9a-f]{12}\.css$", href), href  # the hashed name
    header = page.locator("#header")
    assert header.evaluate("element => getComputedStyle(element).backgroundColor") not in ("", "rgba(0, 0, 0, 0)")
    shot(page, "make-run-login")

    # Compressed and cached for a year: what a browser is told about the stylesheet.
    request = urllib.request.Request(make_run.url + href, headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Encoding"] == "gzip"
        assert "max-age=315360000" in answer.headers["Cache-Control"]
        assert "immutable" in answer.headers["Cache-Control"]

    log_in(page, admin_user)
    page.goto("/admin/operations/operation/")
    row = page.locator("#result_list tbody tr").filter(has_text=operation.pk)
    row.locator("input.action-select").check()  # the change list's script counts the selection
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")
    shot(page, "make-run-operations")

    page.goto("/api/v1/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Resilient operations API")
    expect(page.locator(".swagger-ui").get_by_text("/api/v1/operations/{operation_id}/resume/").first).to_be_visible()
    shot(page, "make-run-api-docs")
    assert errors == []
