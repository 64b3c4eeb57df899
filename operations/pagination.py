"""The pages of the long lists (the API's and the admin's operations): a count that stays cheap at a million rows.

A list's `count` is exact up to EXACT_COUNT_LIMIT rows: counting is stopped one row past it, so it costs at most
that many index entries. Past it, the count is PostgreSQL's estimate of the rows the filters leave (the
planner's, from the table's statistics; never below EXACT_COUNT_LIMIT + 1): counting them all would read every
one, tens of milliseconds a page at a million. Whether a page has a next is known exactly either way: a page
reads one row past its end.
"""

from __future__ import annotations

import json

from django.core.paginator import EmptyPage, Page, Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

EXACT_COUNT_LIMIT = 10_000
MAX_OFFSET = 2**63 - 1  # PostgreSQL's OFFSET is a bigint


def estimated_count(queryset: QuerySet) -> int | None:
    """The planner's estimate of the rows of `queryset` (PostgreSQL's EXPLAIN), None elsewhere."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    sql, params = queryset.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


class ListPage(Page):
    def __init__(self, object_list, number: int, paginator: "ListPaginator", more: bool) -> None:
        super().__init__(object_list, number, paginator)
        self.more = more

    def has_next(self) -> bool:
        return self.more  # the row past the page, not the count: an estimate may be above or below


class ListPaginator(Paginator):
    """Django's paginator with the count above; a page past the last row is an EmptyPage, as with an exact count."""

    @cached_property
    def count(self) -> int:
        if not isinstance(self.object_list, QuerySet):
            return super().count
        counted = self.object_list.order_by()[: EXACT_COUNT_LIMIT + 1].count()
        if counted <= EXACT_COUNT_LIMIT:
            return counted
        return max(EXACT_COUNT_LIMIT + 1, estimated_count(self.object_list) or 0)

    def validate_number(self, number) -> int:
        if self.count <= EXACT_COUNT_LIMIT:
            return super().validate_number(number)
        number = super().validate_number(1) if number in (None, "") else number
        try:
            number = int(number)
        except (TypeError, ValueError):
            return super().validate_number(number)  # its PageNotAnInteger
        if number < 1:
            raise EmptyPage(self.error_messages["min_page"])
        if number * self.per_page > MAX_OFFSET:  # no table holds that many: a page the database's OFFSET refuses
            raise EmptyPage(self.error_messages["no_results"])
        return number  # past an estimated end: found out by reading (page)

    def page(self, number) -> ListPage:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        if not rows and number > 1:
            raise EmptyPage(self.error_messages["no_results"])
        return ListPage(rows[: self.per_page], number, self, more=len(rows) > self.per_page)
