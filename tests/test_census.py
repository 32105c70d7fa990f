"""The census: what a storage holds, by state and age, read without scanning every record.

The metrics' gauges and the admin's summary read it (docs/metrics.md, "The census"). Each
storage says how it found each number: ``DatabaseStorage`` counts up to a limit and then
estimates (PostgreSQL's planner) or reports a lower bound; ``CacheStorage`` samples a bounded
``SCAN``. On PostgreSQL, the plan of every query it runs is checked on a large table.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import (
    CacheStorage,
    Census,
    Claim,
    Count,
    DatabaseStorage,
    Origin,
    Storage,
    StorageUnavailable,
    StoredResponse,
)
from django_idempotency.storage import cache as cache_module
from tests.leases import expire_now
from tests.records import redis_record_names
from tests.redis_servers import RedisServer
from tests.store_faults import failing_queries, on_the_table

LONG = timedelta(minutes=5)
RESPONSE = StoredResponse(status=201, headers=(), body=b"{}")


@pytest.fixture(
    params=[
        pytest.param("database", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("cache", marks=pytest.mark.redis),
    ]
)
def storage(request: pytest.FixtureRequest) -> Storage:
    if request.param == "database":
        return DatabaseStorage()
    request.getfixturevalue("redis_cache")
    return CacheStorage("idempotency")


def claim(storage: Storage, key: str | None = None) -> Claim:
    result = storage.claim(
        "scope-a", key or f"k-{uuid.uuid4()}", "fp", lease=LONG, origin=Origin("POST", "/o")
    )
    assert isinstance(result, Claim)
    return result


def census(storage: Storage) -> Census:
    found = storage.census()
    assert found is not None
    return found


def test_census__an_empty_store_holds_nothing(storage: Storage) -> None:
    found = census(storage)

    assert {name: count.value for name, count in found.counts().items()} == dict.fromkeys(
        ["in_flight", "lease_expired", "completed", "not_replayable", "expired"], 0
    )
    assert all(count.is_exact for count in found.counts().values())
    assert found.oldest_in_flight is None
    assert found.oldest_expired is None


def test_census__counts_records_by_state(storage: Storage) -> None:
    for _ in range(3):
        claim(storage)
    for _ in range(2):
        storage.complete(claim(storage), RESPONSE, ttl=LONG)
    storage.complete(claim(storage), RESPONSE, ttl=LONG, replayable=False)

    found = census(storage)

    assert found.in_flight == Count(3)
    assert found.completed == Count(2)
    assert found.not_replayable == Count(1)
    assert found.oldest_in_flight is not None
    assert timedelta(0) <= found.oldest_in_flight < LONG


def test_census__a_released_key_is_no_longer_counted(storage: Storage) -> None:
    storage.release(claim(storage))

    assert census(storage).in_flight == Count(0)


@pytest.mark.django_db(transaction=True)
def test_database_census__splits_lease_expired_and_expired_records() -> None:
    storage = DatabaseStorage()
    stuck, done = claim(storage), claim(storage)
    storage.complete(done, RESPONSE, ttl=LONG)
    claim(storage)
    expire_now(stuck.key, storage=storage)
    expire_now(done.key, storage=storage)

    found = census(storage)

    assert (found.in_flight, found.lease_expired) == (Count(1), Count(1))
    assert (found.completed, found.expired) == (Count(0), Count(1))
    assert found.oldest_expired is not None
    assert found.oldest_expired >= timedelta(seconds=1)  # expire_now sets it a second ago


@pytest.mark.django_db(transaction=True)
def test_database_census__oldest_in_flight_is_the_oldest_claims_age() -> None:
    storage = DatabaseStorage()
    old = claim(storage)
    claim(storage)
    started = IdempotencyKey.objects.get(key=old.key).created_at
    IdempotencyKey.objects.filter(key=old.key).update(created_at=started - LONG)

    found = census(storage)

    assert found.oldest_in_flight is not None
    assert LONG <= found.oldest_in_flight < LONG + timedelta(minutes=1)


@pytest.mark.django_db
def test_bounded_count__stops_counting_at_the_limit() -> None:
    storage = DatabaseStorage()
    for _ in range(4):
        claim(storage)
    analyze()  # the statistics a table in production has, for PostgreSQL's estimate
    records = IdempotencyKey.objects.all()

    past_the_limit = records.bounded_count(limit=3)

    assert not past_the_limit.is_exact
    assert past_the_limit.value >= 3  # at least 3, or the planner's estimate (PostgreSQL)
    assert records.bounded_count(limit=4) == Count(4)


@pytest.mark.django_db(transaction=True)
def test_database_census__a_failing_query_is_storage_unavailable() -> None:
    with failing_queries(on_the_table("SELECT")), pytest.raises(StorageUnavailable):
        DatabaseStorage().census()


@pytest.mark.redis
def test_cache_census__oldest_in_flight_is_the_lease_minus_the_ttl_left(
    redis_cache: object,
) -> None:
    storage = CacheStorage("idempotency")
    running = claim(storage)
    (name,) = redis_record_names(storage, running.key)
    # As if the claim had run for 100 s: its TTL is the lease less that.
    storage._client().pexpire(name, int(LONG.total_seconds() * 1000) - 100_000)

    found = census(storage)

    assert found.oldest_in_flight is not None
    assert timedelta(seconds=100) <= found.oldest_in_flight < timedelta(seconds=101)


@pytest.mark.redis
def test_cache_census__a_bounded_sample_is_a_lower_bound(redis_cache: object) -> None:
    storage = CacheStorage("idempotency")
    for _ in range(5):
        claim(storage)

    found = storage.census(sample=3)

    assert found.sampled == 3
    assert found.in_flight == Count(3, "at_least")


@pytest.mark.redis
def test_cache_census__stops_after_a_bounded_number_of_scan_calls(
    redis_cache: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = CacheStorage("idempotency")
    for _ in range(3):
        claim(storage)
    # One key per call and one call in all: the census reads one record and says "at least".
    monkeypatch.setattr(cache_module, "_SCAN_COUNT", 1)
    monkeypatch.setattr(cache_module, "_SCAN_CALLS", 1)

    found = storage.census()

    assert found.in_flight.kind == "at_least"
    assert found.sampled is not None
    assert found.sampled <= 3


@pytest.mark.redis
def test_cache_census__a_stopped_redis_is_storage_unavailable(
    private_redis: RedisServer,
) -> None:
    private_redis.stop()

    with pytest.raises(StorageUnavailable):
        CacheStorage("idempotency").census()


def test_census__a_storage_of_ones_own_has_none_by_default() -> None:
    class Minimal(Storage):
        def claim(self, *args: object, **kwargs: object) -> Claim:
            raise NotImplementedError

        def complete(self, *args: object, **kwargs: object) -> None:
            raise NotImplementedError

        def release(self, claim: Claim) -> bool:
            raise NotImplementedError

        def get(self, scope: str, key: str) -> None:
            raise NotImplementedError

    assert Minimal().census() is None


def analyze() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {IdempotencyKey._meta.db_table}")


# On PostgreSQL: the plans on a large table. The rows go in by one INSERT ... SELECT, and
# ANALYZE gives the planner the statistics a table in production has.

ROWS = 100_000


def _fill(rows: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {IdempotencyKey._meta.db_table}
                (scope, key, fingerprint, token, state, method, path, created_at,
                 expires_at, response_status, response_headers, response_body)
            SELECT 'scope', 'k' || n, 'fp', md5(n::text),
                   CASE WHEN n <= 20 THEN 'in_flight'
                        WHEN n <= 30 THEN 'in_flight'
                        WHEN n <= 5030 THEN 'completed'
                        WHEN n <= 6000 THEN 'not_replayable'
                        ELSE 'completed' END,
                   'POST', '/orders', now() - interval '1 minute',
                   CASE WHEN n <= 20 THEN now() + interval '5 minutes'
                        WHEN n <= 5030 THEN now() - interval '1 hour'
                        ELSE now() + interval '1 day' END,
                   201, '[]', ''
            FROM generate_series(1, %s) AS n
            """,
            [rows],
        )
        cursor.execute(f"ANALYZE {IdempotencyKey._meta.db_table}")


@pytest.mark.postgres
@pytest.mark.django_db
def test_postgres_census__no_query_scans_the_table() -> None:
    _fill(ROWS)

    with CaptureQueriesContext(connection) as queries:
        found = census(DatabaseStorage())

    assert (found.in_flight, found.lease_expired) == (Count(20), Count(10))
    assert found.expired == Count(5000)
    assert found.completed.kind == "estimate"
    assert abs(found.completed.value - (ROWS - 6000)) < ROWS * 0.1
    assert len(queries) <= 12
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            sql = query["sql"]
            if sql.startswith("EXPLAIN"):
                continue
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
            plan = json.dumps(cursor.fetchone()[0])
            assert "Seq Scan" not in plan, (sql, plan)
