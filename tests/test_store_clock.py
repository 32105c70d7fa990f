"""Leases and retention follow the store's clock, never an app server's (issue 7, item 5).

Each storage here is built with an app clock 40 s off, as on an app server whose NTP failed.
A lease of 30 s must still hold for 30 s by the store's clock, whichever server claims and
whichever server retries; a completed record keeps its retention by the store's clock; and the
operators' tools (purge, the admin's expire action) read the database's clock too.

PostgreSQL only for the database storage: SQLite runs inside the app's process, so its clock is
the app's and there is no other server to disagree with. The live proof with real skewed
gunicorn servers is tests/test_clock_skew.py.

The database clock of the backends the suite has no server for (MySQL/MariaDB, Oracle): the
SQL that reads it, and how what they return reads as an aware datetime, on every pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from django_idempotency.clock import database_now, now_sql, to_datetime
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import (
    CacheStorage,
    Claim,
    DatabaseStorage,
    Record,
    Storage,
    StoredResponse,
)

LEASE = timedelta(seconds=30)
SKEW = timedelta(seconds=40)
TTL = timedelta(hours=1)
# How far apart two readings of one clock may be within a test: generous, never racy.
SLACK = timedelta(seconds=10)

#: The skew tests need a database server of their own (see above); the clock SQL tests do not.
ON_POSTGRES = pytest.mark.postgres


def skewed(offset: timedelta, now: Callable[[], datetime] = timezone.now) -> Callable[[], datetime]:
    """Return an app clock ``offset`` away from the true time (bound early: it may replace now)."""
    return lambda: now() + offset


@pytest.fixture(
    params=[
        pytest.param("database", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("cache", marks=[pytest.mark.redis, pytest.mark.django_db(transaction=True)]),
    ]
)
def server(request: pytest.FixtureRequest) -> Callable[[timedelta], Storage]:
    """Return a factory: the storage as an app server whose clock is off by ``offset`` sees it."""
    if request.param == "database":
        return lambda offset: DatabaseStorage(clock=skewed(offset))
    request.getfixturevalue("redis_cache")
    return lambda offset: CacheStorage("idempotency", clock=skewed(offset))


@pytest.fixture
def key() -> str:
    return f"key-{uuid.uuid4()}"


@ON_POSTGRES
@pytest.mark.parametrize(
    ("owner_skew", "duplicate_skew"),
    [(-SKEW, timedelta(0)), (SKEW, timedelta(0)), (timedelta(0), SKEW), (timedelta(0), -SKEW)],
    ids=["owner-behind", "owner-ahead", "duplicate-ahead", "duplicate-behind"],
)
def test_lease__a_skewed_server_neither_shortens_nor_takes_over_a_live_claim(
    server: Callable[[timedelta], Storage],
    key: str,
    owner_skew: timedelta,
    duplicate_skew: timedelta,
) -> None:
    owner = server(owner_skew).claim("scope", key, "fp", lease=LEASE)
    assert isinstance(owner, Claim)

    duplicate = server(duplicate_skew).claim("scope", key, "fp", lease=LEASE)

    assert isinstance(duplicate, Record), "the duplicate took over a live claim"
    assert (duplicate.is_in_flight, duplicate.token) == (True, owner.token)


@ON_POSTGRES
@pytest.mark.parametrize("owner_skew", [-SKEW, SKEW], ids=["behind", "ahead"])
def test_complete__a_skewed_owner_completes_and_retention_follows_the_store_clock(
    server: Callable[[timedelta], Storage], key: str, owner_skew: timedelta
) -> None:
    owner_server = server(owner_skew)
    owner = owner_server.claim("scope", key, "fp", lease=LEASE)
    assert isinstance(owner, Claim)

    owner_server.complete(owner, StoredResponse(201, (), b"paid"), ttl=TTL)

    replay = server(timedelta(0)).claim("scope", key, "fp", lease=LEASE)
    assert isinstance(replay, Record)
    assert replay.response == StoredResponse(201, (), b"paid")
    store_now = database_now("default") if isinstance(owner_server, DatabaseStorage) else None
    expected = (store_now or timezone.now()) + TTL
    assert abs(replay.expires_at - expected) < SLACK


@ON_POSTGRES
@pytest.mark.django_db(transaction=True)
def test_purge__an_app_clock_ahead_keeps_a_live_lease(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = DatabaseStorage().claim("scope", key, "fp", lease=LEASE)
    assert isinstance(owner, Claim)
    monkeypatch.setattr(timezone, "now", skewed(SKEW))

    call_command("purge_idempotency_keys", stdout=StringIO(), stderr=StringIO())

    assert IdempotencyKey.objects.filter(key=key).exists(), "purge freed a live key"
    assert IdempotencyKey.objects.expired().filter(key=key).exists() is False


@ON_POSTGRES
@pytest.mark.django_db(transaction=True)
def test_queryset__expired_and_live_read_the_database_clock(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    DatabaseStorage().claim("scope", key, "fp", lease=LEASE)
    monkeypatch.setattr(timezone, "now", skewed(SKEW))

    records = IdempotencyKey.objects.filter(key=key)

    assert (records.live().count(), records.expired().count()) == (1, 0)


# The database clock of other backends


@pytest.mark.parametrize(
    ("vendor", "use_tz", "expected"),
    [
        ("mysql", True, "UTC_TIMESTAMP(6)"),
        ("mysql", False, None),
        ("oracle", True, "SYS_EXTRACT_UTC(SYSTIMESTAMP)"),
        ("oracle", False, None),
        ("sqlite", True, None),
    ],
)
def test_clock__server_time_where_the_backend_can_tell_it(
    settings: Any, vendor: str, use_tz: bool, expected: str | None
) -> None:
    settings.USE_TZ = use_tz

    assert now_sql(SimpleNamespace(vendor=vendor)) == expected  # type: ignore[arg-type]


def test_clock__naive_utc_from_mysql_reads_as_aware() -> None:
    assert to_datetime(datetime(2026, 1, 2, 3, 4, 5)) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_clock__anything_but_a_datetime_is_refused() -> None:
    with pytest.raises(TypeError, match="expected a datetime"):
        to_datetime(1767322800)


def test_clock__text_from_sqlite_reads_as_aware() -> None:
    assert to_datetime("2026-01-02 03:04:05.5") == datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)
