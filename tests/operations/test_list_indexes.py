"""The operations lists at a million rows (docs/architecture.md, "The lists' indexes"): every sort the admin
offers, and the API's pages, filtered or not, read an index in order and stop at the page, never sorting the rows
the filters leave; no index holds a column a heartbeat writes, so heartbeats stay in-place updates (HOT)."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import result_headers
from django.db import connection, transaction
from django.test import Client, RequestFactory

from operations.models import Operation, OperationStatus, Worker
from operations.services.workers import Progress
from tests.conftest import token_client
from tests.factories import OperationFactory, UserFactory, ViewOnlyStaffFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/operations/operation/"
TABLE = Operation._meta.db_table
ADMIN_FILTERS = ["", "status__exact=FAILED", "operation_type__exact=backtesting"]
API_FILTERS = ["", "status=FAILED", "type=backtesting", "type=backtesting&status=COMPLETED"]


def plan_nodes(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def sorted_or_scanned(statements: list[tuple[str, tuple]]) -> list[str]:
    """What in the plans of these statements reads the operations other than an index in order: a sequential
    scan, or a sort. Each is planned with sequential scans and sorts off (a test's table is too small for the
    planner to want an index otherwise): a plan keeps one only where no index answers the statement."""
    found = []
    for sql, params in statements:
        if not sql.startswith("SELECT") or TABLE not in sql:
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            for setting in ("enable_seqscan", "enable_sort", "enable_incremental_sort"):
                cursor.execute(f"SET LOCAL {setting} = off")
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            transaction.set_rollback(True)  # the settings with it
        for node in plan_nodes(plan[0]["Plan"]):
            if node["Node Type"] == "Seq Scan" and node["Relation Name"] == TABLE:
                found.append(f"sequential scan: {sql}")
            elif node["Node Type"] in ("Sort", "Incremental Sort"):
                found.append(f"{node['Node Type']} by {node.get('Sort Key')}: {sql}")
    return found


def statements_of(client, path: str) -> list[tuple[str, tuple]]:
    statements: list[tuple[str, tuple]] = []

    def record(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return statements


def admin_sorts(user) -> list[str]:
    """The `o` of every sort the changelist offers, each way, read from its column headers as it renders them."""
    request = RequestFactory().get(CHANGELIST)
    request.user = user
    changelist = admin.site._registry[Operation].get_changelist_instance(request)
    sortable = [index for index, header in enumerate(result_headers(changelist)) if header["sortable"]]
    return [f"o={sign}{index}" for index in sortable for sign in ("", "-")]


@pytest.fixture
def operations(user) -> None:
    for index, status in enumerate([OperationStatus.COMPLETED, OperationStatus.FAILED, OperationStatus.RUNNING] * 3):
        OperationFactory(status=status, operation_type=["training", "backtesting"][index % 2],
                         owner=user if index % 3 else None)


@pytest.fixture
def viewer():
    """Staff who see only their own operations, as an ordinary user does (the admin's rule is the API's)."""
    return ViewOnlyStaffFactory()


def test_the_admin_offers_sorts_on_the_indexed_columns_only(admin_user):
    request = RequestFactory().get(CHANGELIST)
    request.user = admin_user
    headers = list(result_headers(admin.site._registry[Operation].get_changelist_instance(request)))
    offered = [re.sub(r"<[^>]+>", "", str(header["text"])).strip().lower() for header in headers if header["sortable"]]

    assert offered == ["operation", "status", "created at"]


@pytest.mark.parametrize("who", ["superuser", "viewer"])
def test_every_sort_the_admin_offers_reads_an_index_in_order(operations, admin_user, viewer, who):
    """Newest first and every sort offered, each way, unfiltered and filtered by status and by type: an index
    read in order answers each (a sort added without its index fails here)."""
    account = admin_user if who == "superuser" else viewer
    client = Client()
    client.force_login(account)
    sorts = admin_sorts(account)
    assert len(sorts) >= 6
    pages = [f"{CHANGELIST}?{'&'.join(part for part in (query, sort) if part)}"
             for query in ADMIN_FILTERS for sort in ["", *sorts]]
    found = [problem for path in pages for problem in sorted_or_scanned(statements_of(client, path))]

    assert found == [], "\n".join(found)


def test_a_sort_ascending_breaks_ties_ascending(operations, admin_user):
    """Ties broken in the sort's direction (by creation time, then id), as the index reads them."""
    request = RequestFactory().get(CHANGELIST, {"o": admin_sorts(admin_user)[2].removeprefix("o=")})
    request.user = admin_user
    changelist = admin.site._registry[Operation].get_changelist_instance(request)

    assert changelist.get_ordering(request, changelist.root_queryset) == ["status", "created_at", "operation_id"]
    assert list(changelist.result_list) == sorted(Operation.objects.all(),
                                                  key=lambda row: (row.status, row.created_at, row.pk))


@pytest.mark.parametrize("who", ["staff", "owner"])
def test_every_page_of_the_api_list_reads_an_index_in_order(operations, staff, user, who):
    client = token_client(staff if who == "staff" else user)
    found = [problem for query in API_FILTERS
             for problem in sorted_or_scanned(statements_of(client, f"/api/v1/operations/?{query}"))]

    assert found == [], "\n".join(found)


def test_no_index_holds_a_column_a_heartbeat_writes():
    """A heartbeat writes its operation's heartbeat and progress, and its worker's last sighting: were any of
    them in an index, PostgreSQL would write every index of the table again for each heartbeat."""
    written = {Operation: ["last_heartbeat_at", *Progress(current=1, total=1, unit="u", percent=1.0,
                                                          message="m").as_fields()],
               Worker: ["last_seen_at"]}
    found = []
    with connection.cursor() as cursor:
        for model, fields in written.items():
            columns = [model._meta.get_field(name).column for name in fields]
            cursor.execute("SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                           "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass",
                           [model._meta.db_table])
            for name, definition in cursor.fetchall():
                found += [f"{name} holds {column}: {definition}" for column in columns
                          if re.search(rf"\b{column}\b", definition)]

    assert found == [], "\n".join(found)


def test_an_ordinary_user_sees_their_own_in_the_admin_sorted(operations, viewer):
    mine = OperationFactory(owner=viewer, status=OperationStatus.FAILED)
    OperationFactory(owner=UserFactory(), status=OperationStatus.FAILED)
    client = Client()
    client.force_login(viewer)

    for sort in admin_sorts(viewer):
        response = client.get(f"{CHANGELIST}?{sort}")
        assert [row.pk for row in response.context["cl"].result_list] == [mine.pk], sort
