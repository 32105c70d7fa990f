"""One contract, every storage: DatabaseStorage (SQLite or PostgreSQL) and CacheStorage (Redis).

Beyond the contract, the storage interface itself: a failing query raises
``StorageUnavailable``, the module names no storage it does not ship, and what a storage of
one's own inherits from ``Storage``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from django_idempotency import storage as storage_module
from django_idempotency.storage import (
    CacheStorage,
    Claim,
    DatabaseStorage,
    Origin,
    OwnershipLost,
    Record,
    State,
    Storage,
    StorageUnavailable,
    StoredResponse,
)
from tests.leases import expire_now
from tests.store_faults import failing_queries, on_the_table

LONG = timedelta(seconds=30)

BODY = bytes(range(256)) * 8 + b"\x00\r\n\xff"
RESPONSE = StoredResponse(
    status=201,
    headers=(("Content-Type", "application/octet-stream"), ("Location", "/orders/ü/7")),
    body=BODY,
)


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


@pytest.fixture
def key() -> str:
    # Unique per test, so a record left behind by another test can never answer.
    return f"key-{uuid.uuid4()}"


def claim(storage: Storage, key: str, fingerprint: str = "fp-1", lease: timedelta = LONG) -> Claim:
    result = storage.claim(
        "scope-a", key, fingerprint, lease=lease, origin=Origin("POST", "/orders")
    )
    assert isinstance(result, Claim)
    return result


def test_claim__returns_claim_with_token_and_lease(storage: Storage, key: str) -> None:
    before = timezone.now()

    result = storage.claim("scope-a", key, "fp-1", lease=LONG, origin=Origin("POST", "/orders"))

    assert isinstance(result, Claim)
    assert (result.scope, result.key, result.fingerprint) == ("scope-a", key, "fp-1")
    assert len(result.token) >= 16
    assert before + LONG <= result.expires_at <= timezone.now() + LONG


def test_claim__is_never_refused_for_its_origin(storage: Storage, key: str) -> None:
    # The origin is a label for operators: one longer than the store keeps is cut, not fatal.
    origin = Origin(kind="K" * 300, name="/" + "p" * 10_000)

    result = storage.claim("scope-a", key, "fp-1", lease=LONG, origin=origin)

    assert isinstance(result, Claim)
    assert storage.get("scope-a", key) is not None


def test_claim__returns_live_record_to_second_caller(storage: Storage, key: str) -> None:
    owner = claim(storage, key)

    second = storage.claim("scope-a", key, "fp-1", lease=LONG)

    assert isinstance(second, Record)
    assert second.state is State.IN_FLIGHT
    assert second.is_in_flight
    assert second.token == owner.token
    assert second.response is None
    assert abs(second.expires_at - owner.expires_at) < timedelta(seconds=2)


def test_claim__gives_each_claim_a_fresh_token(storage: Storage, key: str) -> None:
    first = claim(storage, key)
    assert storage.release(first)

    second = claim(storage, key)

    assert second.token != first.token


def test_claim__returns_mismatching_fingerprint_as_stored(storage: Storage, key: str) -> None:
    claim(storage, key, fingerprint="fp-original")

    other = storage.claim("scope-a", key, "fp-different", lease=LONG)

    assert isinstance(other, Record)
    assert other.fingerprint == "fp-original"


def test_complete__replays_exact_status_headers_and_body(storage: Storage, key: str) -> None:
    owner = claim(storage, key)
    before = timezone.now()

    storage.complete(owner, RESPONSE, ttl=timedelta(hours=1))

    record = storage.get("scope-a", key)
    assert record is not None
    assert record.state is State.COMPLETED
    assert record.fingerprint == "fp-1"
    assert record.response == RESPONSE
    assert record.response.body == BODY
    assert before + timedelta(minutes=59) < record.expires_at <= timezone.now() + timedelta(hours=1)


def test_claim__replays_completed_record_instead_of_claiming(storage: Storage, key: str) -> None:
    owner = claim(storage, key)
    storage.complete(owner, RESPONSE, ttl=timedelta(hours=1))

    replay = storage.claim("scope-a", key, "fp-1", lease=LONG)

    assert isinstance(replay, Record)
    assert replay.state is State.COMPLETED
    assert replay.response == RESPONSE


def test_complete__stores_large_binary_body_unchanged(storage: Storage, key: str) -> None:
    owner = claim(storage, key)
    body = uuid.uuid4().bytes * 65536  # 1 MiB of random-looking bytes
    storage.complete(owner, StoredResponse(200, (), body), ttl=timedelta(hours=1))

    replay = storage.claim("scope-a", key, "fp-1", lease=LONG)

    assert isinstance(replay, Record)
    assert replay.response is not None
    assert replay.response.body == body


def test_complete__not_replayable_keeps_status_but_no_body(storage: Storage, key: str) -> None:
    owner = claim(storage, key)

    storage.complete(owner, RESPONSE, ttl=timedelta(hours=1), replayable=False)

    record = storage.claim("scope-a", key, "fp-1", lease=LONG)
    assert isinstance(record, Record)
    assert record.state is State.NOT_REPLAYABLE
    assert record.response is not None
    assert record.response.status == 201
    assert record.response.body == b""


def test_get__returns_none_for_unknown_key(storage: Storage, key: str) -> None:
    assert storage.get("scope-a", key) is None


def test_get__returns_in_flight_record(storage: Storage, key: str) -> None:
    owner = claim(storage, key)

    record = storage.get("scope-a", key)

    assert record is not None
    assert record.state is State.IN_FLIGHT
    assert record.token == owner.token
    assert (record.scope, record.key, record.fingerprint) == ("scope-a", key, "fp-1")


def test_claim__takes_over_expired_lease_with_new_token(storage: Storage, key: str) -> None:
    crashed = claim(storage, key)
    expire_now(key, storage=storage)

    assert storage.get("scope-a", key) is None
    successor = storage.claim("scope-a", key, "fp-2", lease=LONG)

    assert isinstance(successor, Claim)
    assert successor.token != crashed.token
    record = storage.get("scope-a", key)
    assert record is not None
    assert (record.token, record.fingerprint) == (successor.token, "fp-2")


def test_complete__after_lease_ended_raises_ownership_lost(storage: Storage, key: str) -> None:
    slow = claim(storage, key)
    expire_now(key, storage=storage)

    with pytest.raises(OwnershipLost):
        storage.complete(slow, RESPONSE, ttl=timedelta(hours=1))

    assert storage.get("scope-a", key) is None


def test_complete__stale_owner_cannot_overwrite_new_owner(storage: Storage, key: str) -> None:
    stale = claim(storage, key)
    expire_now(key, storage=storage)
    current = claim(storage, key)

    with pytest.raises(OwnershipLost):
        storage.complete(stale, StoredResponse(200, (), b"stale"), ttl=timedelta(hours=1))

    record = storage.get("scope-a", key)
    assert record is not None
    assert (record.state, record.token) == (State.IN_FLIGHT, current.token)
    storage.complete(current, RESPONSE, ttl=timedelta(hours=1))
    with pytest.raises(OwnershipLost):
        storage.complete(stale, StoredResponse(200, (), b"stale"), ttl=timedelta(hours=1))
    record = storage.get("scope-a", key)
    assert record is not None
    assert record.response == RESPONSE


def test_release__forgets_own_claim_so_retry_claims_again(storage: Storage, key: str) -> None:
    owner = claim(storage, key)

    assert storage.release(owner) is True

    assert storage.get("scope-a", key) is None
    assert isinstance(storage.claim("scope-a", key, "fp-1", lease=LONG), Claim)


def test_release__stale_owner_cannot_delete_new_owner(storage: Storage, key: str) -> None:
    stale = claim(storage, key)
    expire_now(key, storage=storage)
    current = claim(storage, key)

    assert storage.release(stale) is False

    record = storage.get("scope-a", key)
    assert record is not None
    assert record.token == current.token


def test_release__leaves_completed_record(storage: Storage, key: str) -> None:
    owner = claim(storage, key)
    storage.complete(owner, RESPONSE, ttl=timedelta(hours=1))

    assert storage.release(owner) is False

    record = storage.get("scope-a", key)
    assert record is not None
    assert record.response == RESPONSE


def test_complete__record_expires_after_ttl(storage: Storage, key: str) -> None:
    owner = claim(storage, key)
    storage.complete(owner, RESPONSE, ttl=timedelta(hours=1))
    assert storage.get("scope-a", key) is not None

    expire_now(key, storage=storage)

    assert storage.get("scope-a", key) is None
    again = storage.claim("scope-a", key, "fp-1", lease=LONG)
    assert isinstance(again, Claim)
    assert again.token != owner.token
    record = storage.get("scope-a", key)
    assert record is not None
    assert (record.state, record.response) == (State.IN_FLIGHT, None)


def test_complete__completed_record_outlives_its_lease(storage: Storage, key: str) -> None:
    owner = claim(storage, key)
    storage.complete(owner, RESPONSE, ttl=timedelta(hours=1))

    replay = storage.claim("scope-a", key, "fp-1", lease=LONG)
    assert isinstance(replay, Record)
    assert replay.response == RESPONSE
    # Retention replaced the lease: the record now lives for the TTL, not the 30 s lease.
    assert replay.expires_at > owner.expires_at + timedelta(minutes=30)


def test_claim__scopes_are_isolated(storage: Storage, key: str) -> None:
    alice = storage.claim("alice", key, "fp-a", lease=LONG)
    bob = storage.claim("bob", key, "fp-b", lease=LONG)
    assert isinstance(alice, Claim)
    assert isinstance(bob, Claim)

    storage.complete(alice, RESPONSE, ttl=timedelta(hours=1))

    bobs = storage.get("bob", key)
    assert bobs is not None
    assert (bobs.scope, bobs.state, bobs.fingerprint) == ("bob", State.IN_FLIGHT, "fp-b")
    assert storage.release(bob) is True
    alices = storage.get("alice", key)
    assert alices is not None
    assert alices.response == RESPONSE


def test_claim__scope_and_key_boundaries_do_not_collide(storage: Storage) -> None:
    suffix = uuid.uuid4().hex
    first = storage.claim("a", f"bc{suffix}", "fp-1", lease=LONG)
    second = storage.claim("ab", f"c{suffix}", "fp-2", lease=LONG)

    assert isinstance(first, Claim)
    assert isinstance(second, Claim)


# What the interface promises beyond the contract


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("operation", "verb"), [("get", "SELECT"), ("release", "DELETE")])
def test_storage_interface__a_failing_query_raises_storage_unavailable(
    operation: str, verb: str
) -> None:
    storage = DatabaseStorage()
    claim = storage.claim("scope", "k", "fp", lease=timedelta(minutes=1))
    assert isinstance(claim, Claim)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: storage.get("scope", "k"),
        "release": lambda: storage.release(claim),
    }

    with failing_queries(on_the_table(verb)), pytest.raises(StorageUnavailable):
        calls[operation]()
    assert storage.get("scope", "k") is not None  # the record is untouched


def test_storage_module__names_no_other_storage() -> None:
    with pytest.raises(AttributeError, match="RedisStorage"):
        storage_module.RedisStorage  # noqa: B018


@pytest.mark.django_db(transaction=True)
def test_storage_interface__defaults_of_a_storage_that_keeps_no_transaction() -> None:
    # What a third-party storage inherits when it implements only the four operations.
    class MemoryStorage(Storage):
        def claim(self, scope: str, key: str, fingerprint: str, **options: Any) -> Claim:
            return Claim(scope, key, fingerprint, "token", timezone.now())

        def complete(self, claim: Claim, response: StoredResponse, **options: Any) -> None:
            return None

        def release(self, claim: Claim) -> bool:
            return True

        def get(self, scope: str, key: str) -> Record | None:
            return None

    storage = MemoryStorage()
    claim = storage.claim("scope", "k", "fp", lease=timedelta(minutes=1))

    assert storage.using is None
    assert storage.is_rollback_marked() is False
    with storage.atomic():
        pass
    assert claim.store_now() is None  # the claim did not read the store's clock


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("CaseKey-x", "casekey-x"),  # a case-insensitive collation merges them
        ("café", "cafe"),  # an accent-insensitive one too
        ("key", "key "),  # a PAD SPACE one ignores trailing spaces
        ("straße", "strasse"),
    ],
)
def test_claim__keys_and_scopes_that_differ_in_any_byte_are_other_records(
    storage: Storage, first: str, second: str
) -> None:
    for scope, key in (
        (f"scope-{first}", "k"),
        (f"scope-{second}", "k"),
        ("s", first),
        ("s", second),
    ):
        assert isinstance(storage.claim(scope, key, "fp-1", lease=LONG), Claim), (scope, key)
    assert storage.get("s", first) is not None
    assert storage.get("s", second) is not None
    assert storage.get("s", first).key == first  # type: ignore[union-attr]
    assert storage.get("s", second).key == second  # type: ignore[union-attr]
