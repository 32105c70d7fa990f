"""DatabaseStorage's SQL on the request path, built once per database backend, and its senders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.backends.base.base import BaseDatabaseWrapper

from django_idempotency.clock import now_sql
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import postgresql


class Statements:
    """The request path's SQL for one database vendor, quoted by its own rules."""

    def __init__(self, connection: BaseDatabaseWrapper) -> None:
        q = connection.ops.quote_name
        database_now = now_sql(connection)
        #: Whether the fences compare with the app's clock, passed as a parameter.
        self.uses_app_clock = database_now is None
        table = q(IdempotencyKey._meta.db_table)
        pk, scope, key, state, fingerprint, token = map(
            q, ["id", "scope", "key", "state", "fingerprint", "token"]
        )
        method, path, created_at, completed_at, expires_at = map(
            q, ["method", "path", "created_at", "completed_at", "expires_at"]
        )
        status, headers, body = map(q, ["response_status", "response_headers", "response_body"])
        # The store's time first (NULL: the app's clock), then the record's columns in the
        # order _to_record reads, all NULL when there is no record: the one-row subquery
        # makes the database answer its time even then.
        one = f"(SELECT 1 AS {q('one')}{connection.features.bare_select_suffix}) {q('one')}"
        record = [pk, state, fingerprint, token, expires_at, status, headers, body]
        self.select = (
            f"SELECT {database_now or 'NULL'}, "
            + ", ".join(f"{table}.{column}" for column in record)
            + f" FROM {one} LEFT JOIN {table} ON {table}.{scope} = %s AND {table}.{key} = %s"
        )
        columns = (
            f"{scope}, {key}, {state}, {fingerprint}, {token}, {method}, {path}, "
            f"{created_at}, {expires_at}, {headers}, {body}"
        )
        values = ", ".join(["%s"] * 11)
        self.insert = f"INSERT INTO {table} ({columns}) VALUES ({values})"
        #: PostgreSQL: the claim and the completion as functions (storage/postgresql.py).
        self.functions = postgresql.uses_functions(connection)
        self.take_over = (
            f"UPDATE {table} SET {state} = %s, {fingerprint} = %s, {token} = %s, "
            f"{method} = %s, {path} = %s, {created_at} = %s, {expires_at} = %s, "
            f"{headers} = %s, {body} = %s, {completed_at} = NULL, {status} = NULL "
            f"WHERE {pk} = %s AND {token} = %s AND {expires_at} <= %s"
        )
        self.complete = (
            f"UPDATE {table} SET {state} = %s, {completed_at} = %s, {expires_at} = %s, "
            f"{status} = %s, {headers} = %s, {body} = %s "
            f"WHERE {scope} = %s AND {key} = %s AND {token} = %s AND {state} = %s "
            f"AND {expires_at} > {database_now or '%s'}"
        )
        self.release = (
            f"DELETE FROM {table} WHERE {scope} = %s AND {key} = %s AND {token} = %s "
            f"AND {state} = %s"
        )

    def now_params(
        self, connection: BaseDatabaseWrapper, clock: Callable[[], datetime]
    ) -> list[Any]:
        """Return the parameter a fence needs for "now": none when the database tells it."""
        return [adapt_datetime(connection, clock())] if self.uses_app_clock else []


_BY_BACKEND: dict[tuple[type[BaseDatabaseWrapper], str, bool], Statements] = {}


def statements(connection: BaseDatabaseWrapper) -> Statements:
    # Quoting rules belong to the backend class; the table name could be swapped in tests,
    # and USE_TZ decides which clock MySQL's fences read.
    cache_key = (type(connection), IdempotencyKey._meta.db_table, settings.USE_TZ)
    statements = _BY_BACKEND.get(cache_key)
    if statements is None:
        statements = _BY_BACKEND[cache_key] = Statements(connection)
    return statements


def execute(connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def fetch_one(
    connection: BaseDatabaseWrapper, sql: str, params: Sequence[Any]
) -> tuple[Any, ...] | None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
        return row


def adapt_datetime(connection: BaseDatabaseWrapper, value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def adapt_json(connection: BaseDatabaseWrapper, value: Any) -> Any:
    return connection.ops.adapt_json_value(value, None)
