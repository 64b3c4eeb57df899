"""UPDATE … RETURNING through the ORM: Django's `update()` says how many rows it changed, not which."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections, transaction
from django.db.backends.postgresql.base import ServerBindingCursor
from django.db.models import QuerySet
from django.db.models.sql import UpdateQuery


def update_returning(queryset: QuerySet, returning: Sequence[str] = (), **values: Any) -> list[dict[str, Any]]:
    """Update the rows of `queryset` with `values` in one statement, as `queryset.update(**values)` does, and
    return what was written to each: its "pk" and its `returning` fields (names of the model's fields).

    The queryset's condition is the UPDATE's own WHERE: PostgreSQL checks it again on the latest version of each
    row it takes (READ COMMITTED), so a row another transaction changed since the statement began is updated only
    if it still matches, and of statements racing for the same rows each row goes to one; SQLite writes one at a
    time. So the condition must be on the table's own columns: a join would make Django filter by a subquery of
    ids instead, which is not checked again. PostgreSQL, and SQLite from 3.35, know RETURNING.
    """
    if queryset.query.is_sliced:
        raise TypeError("Cannot update a query once a slice has been taken.")
    query = queryset.query.chain(UpdateQuery)
    query.add_update_values(values)
    query.annotations = {}  # filters on annotations are already in the WHERE, as in update()
    query.get_initial_alias()
    if query.count_active_tables() != 1:
        raise ValueError("update_returning() takes a condition on the table's own columns only (no join)")
    compiler = query.get_compiler(queryset.db)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:  # `pk__in=[]`, say: nothing to update, no statement
        return []
    opts = queryset.model._meta
    fields = [opts.pk, *(opts.get_field(name) for name in returning)]
    connection = connections[queryset.db]
    sql = f"{sql} RETURNING {', '.join(connection.ops.quote_name(field.column) for field in fields)}"
    with transaction.mark_for_rollback_on_error(using=queryset.db), connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # The backend's and the fields' conversions, as a SELECT of these columns would apply (SQLite's datetimes).
    converters = compiler.get_converters([field.get_col(opts.db_table) for field in fields])
    if converters:
        rows = compiler.apply_converters(rows, converters)
    names = ["pk", *returning]
    return [dict(zip(names, row)) for row in rows]


class _Prepared(ServerBindingCursor):
    """psycopg's server-binding cursor, whose prepared statements Django's query log (DEBUG, tests) shows too: it
    reads the cursor's last query, which psycopg keeps only for a statement it did not prepare."""

    def _send_query_prepared(self, name, pgq, *, binary=None):
        self._query = pgq
        super()._send_query_prepared(name, pgq, binary=binary)


def _prepared_cursor(connection):
    connection.ensure_connection()
    connection.connection.prepare_threshold = 1
    raw = _Prepared(connection.connection)
    return connection.make_debug_cursor(raw) if connection.queries_logged else connection.make_cursor(raw)


def fetch_prepared(sql: str, params: Sequence[Any], alias: str = DEFAULT_DB_ALIAS) -> tuple | None:
    """Run one idempotent statement (PostgreSQL only) that PostgreSQL parses and plans once per connection, and
    return its first row: for a statement a fleet runs hundreds of times a second (the heartbeat), where planning
    it, and a round trip more, cost more than running it.

    - Prepared: Django binds parameters on the client and never prepares (it sets psycopg's prepare_threshold to
      None); this cursor binds on the server, and the connection prepares what such a cursor runs again (Django's
      own cursors still bind on the client and never prepare). A kept connection (DATABASE_CONN_MAX_AGE) keeps
      the plan; one used for a single request never pays for preparing.
    - No health check first: Django checks a kept connection with a round trip of its own (SELECT 1) before its
      first statement of each request. Here the statement is the check: if it fails on a connection the server no
      longer answers (it restarted, say), the connection is closed and the statement run once more on a new one;
      so the statement must be one that may run twice. Inside a transaction it is not retried.

    It passes through Django's execute wrappers and query log as any statement."""
    connection = connections[alias]
    for retry in (False, True):
        try:
            with _prepared_cursor(connection) as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone()
        except (OperationalError, InterfaceError):
            if retry or connection.in_atomic_block or connection.is_usable():
                raise
            connection.close()
    return None  # not reached
