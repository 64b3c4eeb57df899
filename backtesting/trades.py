"""A backtest's trades on a page of their own: a hundred at a time, sorted by any column.

A run may close hundreds of thousands of trades, all in its result (100,000 are 35 MB of JSON). On PostgreSQL
the database pages through them: a page in the list's order takes its hundred trades by their places, a page
sorted by a column sorts the column's values (`jsonb_array_elements`, LIMIT and OFFSET) and takes the page's
trades; either reads the result once inside the database (0.05 to 0.2 s for 100,000 trades) and ships a
hundred trades. SQLite does the same with its JSON functions (`json_each`); another database reads the trade
list and sorts it here, the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db import connection
from django.db.models.fields.json import KeyTransform

from operations.models import Operation
from operations.registry import ResultPageError
from operations.summaries import Unit, format_value

PER_PAGE = 100


@dataclass(frozen=True)
class Column:
    key: str  # the `sort` parameter that sorts by it
    label: str
    unit: Unit
    numeric: bool = True


COLUMNS = (
    Column("number", "#", Unit.COUNT),  # the trade's place in the result's list: the order they closed in
    Column("entry_time", "entry", Unit.TEXT, numeric=False),
    Column("exit_time", "exit", Unit.TEXT, numeric=False),
    Column("side", "side", Unit.TEXT, numeric=False),
    Column("quantity", "quantity", Unit.PRICE),
    Column("entry_price", "entry price", Unit.PRICE),
    Column("exit_price", "exit price", Unit.PRICE),
    Column("pnl", "PnL", Unit.MONEY),
    Column("return", "return", Unit.RETURN),
    Column("commission", "commission", Unit.MONEY),
    Column("bars_held", "bars held", Unit.COUNT),  # exit_bar - entry_bar
)
BY_KEY = {column.key: column for column in COLUMNS}


@dataclass(frozen=True)
class TradesPage:
    total: int  # trades in the result
    rows: list[tuple[int, Any]]  # (place in the list, the trade as the result has it)


# --- reading a page

def _sql_value(key: str) -> str:
    """The column's value of trade `t.trade` in SQL: a number, or NULL where the trade has none (sorted last)."""
    if key == "number":
        return "t.n"
    if key == "bars_held":
        return f"({_sql_value('exit_bar')} - {_sql_value('entry_bar')})"
    if key in BY_KEY and not BY_KEY[key].numeric:
        return f"(t.trade ->> '{key}') COLLATE \"C\""  # code-point order, as Python sorts (ISO times in order)
    return f"(CASE WHEN jsonb_typeof(t.trade -> '{key}') = 'number' THEN (t.trade ->> '{key}')::float8 END)"


def _postgresql_page(operation_id: str, key: str, descending: bool, offset: int, limit: int) -> TradesPage | None:
    direction = "DESC" if descending else "ASC"
    # The trade list is read out of the result once (OFFSET 0 keeps the planner from reading it again for each
    # use); a result whose `trades` is not a list has none. The LEFT JOIN keeps a row, and the count, when the
    # page is past the last.
    source = (
        "(SELECT trades, CASE WHEN jsonb_typeof(trades) = 'array' THEN jsonb_array_length(trades) ELSE 0 END AS length "
        f"FROM (SELECT result -> 'trades' AS trades FROM {Operation._meta.db_table} WHERE operation_id = %s OFFSET 0) "
        "AS read) AS one"
    )
    if key == "number":  # in the list's order: the page's places, without reading the others
        places = ("generate_series(one.length - %s, GREATEST(one.length - %s - %s + 1, 1), -1)" if descending
                  else "generate_series(%s + 1, LEAST(%s + %s, one.length))")
        page, order, params = f"SELECT n FROM {places} AS n", f"page.n {direction}", [offset, offset, limit]
    else:  # sorted on the column's values alone; only the page's trades are taken from the list
        page = (f"SELECT t.n, {_sql_value(key)} AS v FROM jsonb_array_elements(CASE WHEN one.length > 0 THEN "
                "one.trades ELSE '[]'::jsonb END) WITH ORDINALITY AS t(trade, n) "
                f"ORDER BY v {direction} NULLS LAST, t.n {direction} LIMIT %s OFFSET %s")
        order, params = f"page.v {direction} NULLS LAST, page.n {direction}", [limit, offset]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT one.length, page.n, one.trades -> (page.n - 1)::int FROM {source} "
            f"LEFT JOIN LATERAL ({page}) AS page ON true ORDER BY {order}",
            [operation_id, *params],
        )
        found = cursor.fetchall()
    if not found:
        return None
    return TradesPage(total=found[0][0], rows=[(n, _json(trade)) for _, n, trade in found if n is not None])


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # Django's psycopg hands jsonb over as text


def _python_value(key: str, number: int, trade: Any) -> Any:
    """The column's value of a trade, as _sql_value reads it."""
    if key == "number":
        return number
    if key == "bars_held":
        exit_bar, entry_bar = _python_value("exit_bar", number, trade), _python_value("entry_bar", number, trade)
        return None if exit_bar is None or entry_bar is None else exit_bar - entry_bar
    value = trade.get(key) if isinstance(trade, dict) else None
    if key in BY_KEY and not BY_KEY[key].numeric:
        return value if isinstance(value, str) or value is None else json.dumps(value)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _sqlite_value(key: str) -> str:
    """The column's value of trade `t.value` in SQLite's SQL, as _sql_value's."""
    if key == "number":
        return "(t.key + 1)"
    if key == "bars_held":
        return f"({_sqlite_value('exit_bar')} - {_sqlite_value('entry_bar')})"
    # A trade that is not an object has no value (its text is not even JSON: json_type would fail on it).
    if key in BY_KEY and not BY_KEY[key].numeric:
        value = (f"CASE WHEN json_type(t.value, '$.{key}') = 'text' THEN json_extract(t.value, '$.{key}') "
                 f"WHEN json_type(t.value, '$.{key}') <> 'null' THEN json(json_extract(t.value, '$.{key}')) END")
    else:
        value = (f"CASE WHEN json_type(t.value, '$.{key}') IN ('integer', 'real') "
                 f"THEN json_extract(t.value, '$.{key}') END")
    return f"(CASE WHEN t.type = 'object' THEN ({value}) END)"


def _sqlite_page(operation_id: str, key: str, descending: bool, offset: int, limit: int) -> TradesPage | None:
    """SQLite's JSON functions read the result's text and sort in C (a Python sort of 100,000 parsed trades takes
    several times longer): the page's places first, sorting the column's values alone, then its trades."""
    direction = "DESC" if descending else "ASC"
    table = Operation._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT CASE WHEN json_type(result, '$.trades') = 'array' THEN json_array_length(result, "
                       f"'$.trades') ELSE 0 END FROM {table} WHERE operation_id = %s", [operation_id])
        found = cursor.fetchone()
        if found is None:
            return None
        if not found[0]:
            return TradesPage(total=0, rows=[])
        # NULLs last whichever the direction (SQLite puts them first when ascending), ties in the closing order.
        cursor.execute(
            f"SELECT t.key FROM {table} AS o, json_each(o.result, '$.trades') AS t WHERE o.operation_id = %s "
            f"ORDER BY {_sqlite_value(key)} IS NULL, {_sqlite_value(key)} {direction}, t.key {direction} "
            "LIMIT %s OFFSET %s",
            [operation_id, limit, offset],
        )
        places = [place for (place,) in cursor.fetchall()]
        if not places:
            return TradesPage(total=found[0], rows=[])
        cursor.execute(
            f"SELECT t.key, t.type, t.value FROM {table} AS o, json_each(o.result, '$.trades') AS t "
            f"WHERE o.operation_id = %s AND t.key IN ({', '.join(['%s'] * len(places))})",
            [operation_id, *places],
        )
        trades = {place: _sqlite_json(kind, value) for place, kind, value in cursor.fetchall()}
    return TradesPage(total=found[0], rows=[(place + 1, trades[place]) for place in places])


def _sqlite_json(kind: str, value: Any) -> Any:
    """A value of json_each as Python: an object or a list comes as JSON text, a string as itself, true and false
    as 1 and 0."""
    if kind in ("object", "array"):
        return json.loads(value)
    if kind in ("true", "false"):
        return kind == "true"
    return value


def _python_page(operation_id: str, key: str, descending: bool, offset: int, limit: int) -> TradesPage | None:
    found = (Operation.objects.filter(pk=operation_id).annotate(trades=KeyTransform("trades", "result"))
             .values_list("trades", flat=True))
    if not found:
        return None
    trades = found[0] if isinstance(found[0], list) else []
    numbered = list(enumerate(trades, start=1))
    present = [row for row in numbered if _python_value(key, *row) is not None]
    missing = [row for row in numbered if _python_value(key, *row) is None]
    present.sort(key=lambda row: (_python_value(key, *row), row[0]), reverse=descending)
    missing.sort(key=lambda row: row[0], reverse=descending)
    return TradesPage(total=len(trades), rows=(present + missing)[offset:offset + limit])


def trades_page(operation_id: str, *, sort: str = "number", descending: bool = False, offset: int = 0,
                limit: int = PER_PAGE) -> TradesPage | None:
    """Trades `offset` to `offset + limit` of a backtest's result in the order of column `sort` (a key of
    BY_KEY), the trades without a value last, ties in the order they closed; None without such an operation."""
    if sort not in BY_KEY:
        raise ValueError(f"no column {sort!r}")
    read = {"postgresql": _postgresql_page, "sqlite": _sqlite_page}.get(connection.vendor, _python_page)
    return read(operation_id, sort, descending, offset, limit)


# --- the page

def _shown(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value.replace("T", " ").removesuffix("Z")  # "2015-01-01T05:00:00Z" -> "2015-01-01 05:00:00"
    return str(value)


def _cells(number: int, trade: Any) -> list[dict[str, Any]]:
    cells = []
    for column in COLUMNS:
        if column.numeric:
            value = _python_value(column.key, number, trade)
            text = format_value(value, column.unit)
        else:
            value = trade.get(column.key) if isinstance(trade, dict) else None
            text = _shown(value)
        sign = ""
        if column.key == "pnl" and value:
            sign = "positive" if value > 0 else "negative"
        cells.append({"text": text, "numeric": column.numeric, "sign": sign})
    return cells


def _query(sort: str, descending: bool, page: int) -> str:
    return "?" + urlencode({"sort": f"-{sort}" if descending else sort, "page": page})


def trades_context(operation, query: Mapping[str, str]) -> dict[str, Any]:
    """The trades page's context: `sort` (a column's key, `-` before it for descending) and `page` (from 1)
    from the query string."""
    asked_sort = query.get("sort") or "number"
    descending, sort = asked_sort.startswith("-"), asked_sort.removeprefix("-")
    if sort not in BY_KEY:
        raise ResultPageError(
            f"sort: {asked_sort[:40]!r} is not a column of the trades; use one of {', '.join(BY_KEY)}, "
            "with '-' before it to sort in descending order."
        )
    asked_page = query.get("page") or "1"
    page = int(asked_page) if asked_page.isascii() and asked_page.isdigit() and len(asked_page) < 10 else 0
    if page < 1:
        raise ResultPageError(f"page: {asked_page[:40]!r} is not a page number; pages are numbered from 1.")
    found = trades_page(operation.pk, sort=sort, descending=descending, offset=(page - 1) * PER_PAGE)
    total = found.total if found else 0
    pages = max(1, -(-total // PER_PAGE))
    if page > pages:
        raise ResultPageError(f"page: {page} is past the last page, {pages} ({total:,} trades, {PER_PAGE} a page).")
    columns = [
        {"label": column.label, "numeric": column.numeric,
         "sorted": ("descending" if descending else "ascending") if column.key == sort else "",
         "url": _query(column.key, column.key == sort and not descending, 1)}
        for column in COLUMNS
    ]
    return {
        "columns": columns,
        "rows": [{"number": number, "cells": _cells(number, trade)} for number, trade in (found.rows if found else [])],
        "total": total,
        "total_text": format_value(total, Unit.COUNT),
        "first_text": format_value((page - 1) * PER_PAGE + 1, Unit.COUNT),
        "last_text": format_value(min(total, page * PER_PAGE), Unit.COUNT),
        "page": page,
        "pages": pages,
        "sort_label": BY_KEY[sort].label,
        "descending": descending,
        "first_url": _query(sort, descending, 1) if page > 1 else "",
        "previous_url": _query(sort, descending, page - 1) if page > 1 else "",
        "next_url": _query(sort, descending, page + 1) if page < pages else "",
        "last_url": _query(sort, descending, pages) if page < pages else "",
        "sort_value": asked_sort,
    }
