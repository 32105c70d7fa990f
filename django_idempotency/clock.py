"""The store's clock: SQL for the database's current time, so leases never trust an app server's.

A lease must end at the same instant for every app server, however far their clocks drift
apart (DESIGN §1, "lease"). So ``DatabaseStorage`` and the operators' tools read "now" from the
database server itself: one clock for every writer. SQLite lives inside the app's process, so
its clock *is* the app's; the same holds for any backend this module does not know, which then
falls back to the app server's clock (docs/behaviour.md, "Clocks").
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone
from django.utils.dateparse import parse_datetime


def now_sql(connection: BaseDatabaseWrapper) -> str | None:
    """Return the SQL for the database server's current time, or ``None`` for the app's clock.

    The expression compares with the model's ``DateTimeField`` columns as Django stores them:
    ``timestamptz`` on PostgreSQL, naive UTC on MySQL/MariaDB when ``USE_TZ`` is on.
    """
    if connection.vendor == "postgresql":
        # clock_timestamp(), not now(): now() stands still for a whole transaction, and a
        # claim inside ATOMIC_REQUESTS may run long after its transaction began.
        return "clock_timestamp()"
    if connection.vendor == "mysql" and settings.USE_TZ:
        return "UTC_TIMESTAMP(6)"
    if connection.vendor == "oracle" and settings.USE_TZ:
        return "SYS_EXTRACT_UTC(SYSTIMESTAMP)"
    # SQLite (the app's own process), MySQL without USE_TZ (naive local times whose zone the
    # server does not know) and unknown backends: the app server's clock.
    return None


def to_datetime(value: object) -> datetime:
    """Return a datetime read from a raw cursor in the form Django's own fields hold it.

    SQLite returns text, MySQL naive UTC, PostgreSQL aware datetimes.
    """
    if isinstance(value, str):
        value = parse_datetime(value)
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime from the database, got {value!r}")
    if settings.USE_TZ and timezone.is_naive(value):
        value = value.replace(tzinfo=UTC)
    return value


def database_now(using: str) -> datetime:
    """Return the current time by the clock of database ``using`` (one query; for tools)."""
    connection = connections[using]
    sql = now_sql(connection)
    if sql is None:
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}{connection.features.bare_select_suffix}")
        row = cursor.fetchone()
    return to_datetime(row[0])
