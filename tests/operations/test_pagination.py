"""A list's count (operations/pagination.py, docs/api.md): exact up to EXACT_COUNT_LIMIT, the database's estimate
past it, counted at most one row past the limit; `next` exact either way, and a page past the last row a 404."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from operations import pagination
from operations.models import Operation
from tests.factories import OperationFactory

pytestmark = pytest.mark.django_db

LIST = "/api/v1/operations/"


@pytest.fixture
def five(staff) -> list[str]:
    return [OperationFactory(owner=staff).pk for _ in range(5)]


def test_a_count_up_to_the_limit_is_exact(staff_client, five):
    body = staff_client.get(LIST, {"page_size": 2}).json()

    assert body["count"] == 5
    assert body["next"] is not None


def test_past_the_limit_the_count_is_an_estimate_above_it_and_next_stays_exact(staff_client, five, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 3)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {Operation._meta.db_table}")
    seen, page = [], 1
    while True:
        response = staff_client.get(LIST, {"page_size": 2, "page": page})
        assert response.status_code == 200
        body = response.json()
        assert body["count"] >= 4  # above the limit: never a number a client could take for an exact one
        seen += [item["operation_id"] for item in body["results"]]
        if body["next"] is None:
            break
        page += 1

    assert page == 3 and sorted(seen) == sorted(five)  # every operation, once, and no empty page at the end
    assert staff_client.get(LIST, {"page_size": 2, "page": 4}).status_code == 404


def test_an_estimate_below_the_rows_still_leads_to_every_page(staff_client, five, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 3)
    monkeypatch.setattr(pagination, "estimated_count", lambda queryset: 1)
    bodies = [staff_client.get(LIST, {"page_size": 2, "page": page}).json() for page in (1, 2, 3)]

    assert [body["count"] for body in bodies] == [4, 4, 4]  # the limit + 1: the most an estimate is raised to
    assert [body["next"] is None for body in bodies] == [False, False, True]
    assert sum(len(body["results"]) for body in bodies) == 5


def test_the_count_reads_at_most_one_row_past_the_limit(staff_client, five, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 3)
    with CaptureQueriesContext(connection) as queries:
        staff_client.get(LIST)
    counts = [query["sql"] for query in queries.captured_queries if "COUNT(" in query["sql"].upper()]

    assert len(counts) == 1 and "LIMIT 4" in counts[0]


def test_the_admin_pages_by_the_same_count(admin_client, five, monkeypatch):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 3)
    response = admin_client.get("/admin/operations/operation/")

    assert response.status_code == 200
    assert response.context["cl"].result_count >= 4
    assert {row.pk for row in response.context["cl"].result_list} == set(five)


def test_the_schema_says_what_count_is(staff_client):
    schema = staff_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    count = schema["components"]["schemas"]["PaginatedOperationList"]["properties"]["count"]

    assert "exact up to 10,000" in count["description"]


@pytest.mark.parametrize("page", [10**18, 10**23])
def test_a_page_number_past_any_table_is_a_404_not_an_error(staff_client, admin_client, five, monkeypatch, page):
    monkeypatch.setattr(pagination, "EXACT_COUNT_LIMIT", 3)
    assert staff_client.get(LIST, {"page": page}).status_code == 404
    answer = admin_client.get("/admin/operations/operation/", {"p": page})
    assert answer.status_code in (200, 302)  # the admin's own answer to a page it cannot show
