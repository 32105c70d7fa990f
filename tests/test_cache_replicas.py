"""``CacheStorage.replicas``: a claim or completion counts only once replicas hold it.

Each test runs a master and a replica of its own (the shared Redis has no replica) and shows
what a replica that does not answer does to a write: it waits, it is sent again, and in the
end it is held by the replica or reported ``StorageUnavailable``, never silently kept by the
master alone. The failovers themselves are in ``test_sentinel.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_idempotency.storage import CacheStorage, Claim, Record, State, StorageUnavailable
from django_idempotency.storage.base import StoredResponse
from tests.redis_sentinel import wait_for
from tests.redis_servers import RedisServer, caches_with, redis_cache_config

pytestmark = pytest.mark.redis

LEASE = timedelta(seconds=60)
RESPONSE = StoredResponse(201, (("Content-Type", "application/json"),), b'{"id": 7}')


@dataclass(frozen=True)
class Pair:
    master: RedisServer
    replica: RedisServer


@pytest.fixture
def pair() -> Iterator[Pair]:
    """A master of the test's own, with one replica in sync, behind ``idempotency``."""
    master = RedisServer()
    master.start()
    replica = RedisServer(replica_of=master.port)
    replica.start()
    try:
        wait_for("the replica's sync", lambda: _replica_is_online(master.port))
        with override_settings(CACHES=caches_with(redis_cache_config(master.port))):
            yield Pair(master, replica)
    finally:
        replica.stop()
        master.stop()


def _replica_is_online(port: int) -> bool:
    with redis.Redis(port=port) as client:
        info = client.info("replication")
    return bool(info.get("slave0", {}).get("state") == "online")


def replicated(deadline: timedelta = timedelta(seconds=1)) -> CacheStorage:
    return CacheStorage(
        "idempotency",
        replicas=1,
        replica_timeout=timedelta(milliseconds=100),
        replica_deadline=deadline,
    )


def state_on(server: RedisServer, storage: CacheStorage, key: str) -> bytes | None:
    """The record's state as ``server`` holds it, read from that server directly."""
    with redis.Redis(port=server.port) as client:
        state: bytes | None = client.hget(storage.record_key("scope", key), "state")
    return state


def new_key() -> str:
    return f"key-{uuid.uuid4()}"


def test_a_claim_returns_once_the_replica_holds_it(pair: Pair) -> None:
    storage = replicated()
    key = new_key()

    claim = storage.claim("scope", key, "fp", lease=LEASE)

    assert isinstance(claim, Claim)
    assert state_on(pair.replica, storage, key) == b"in_flight"


def test_a_completion_returns_once_the_replica_holds_it(pair: Pair) -> None:
    storage = replicated()
    claim = storage.claim("scope", key := new_key(), "fp", lease=LEASE)
    assert isinstance(claim, Claim)

    storage.complete(claim, RESPONSE, ttl=LEASE)

    assert state_on(pair.replica, storage, key) == b"completed"


def test_a_claim_no_replica_holds_in_time_is_unavailable(pair: Pair) -> None:
    storage = replicated()
    pair.replica.pause()
    try:
        with pytest.raises(StorageUnavailable, match="0 of 1 replicas acknowledged the claim"):
            storage.claim("scope", new_key(), "fp", lease=LEASE)
    finally:
        pair.replica.resume()


def test_without_replicas_the_same_claim_counts_at_once(pair: Pair) -> None:
    # What the option changes: the master alone acknowledges, and a failover may lose it.
    pair.replica.pause()
    try:
        claim = CacheStorage("idempotency").claim("scope", new_key(), "fp", lease=LEASE)
    finally:
        pair.replica.resume()

    assert isinstance(claim, Claim)


def test_a_claim_waits_for_a_paused_replica_and_holds_once_it_answers(pair: Pair) -> None:
    storage = replicated(timedelta(seconds=30))
    key = new_key()
    pair.replica.pause()
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            claiming = pool.submit(storage.claim, "scope", key, "fp", lease=LEASE)
            # The claim is written and its WAIT blocks (or it pauses between two tries).
            wait_for("the claim's write", lambda: state_on(pair.master, storage, key) is not None)
            assert not claiming.done()
        finally:
            pair.replica.resume()
        claim = claiming.result(timeout=30)

    assert isinstance(claim, Claim)
    # Sent again, the claim recognised its own token: one claim, the caller's.
    with redis.Redis(port=pair.master.port) as client:
        token = client.hget(storage.record_key("scope", key), "token")
    assert token == claim.token.encode()
    assert state_on(pair.replica, storage, key) == b"in_flight"


def test_a_completion_sent_again_is_acknowledged_as_the_owners(pair: Pair) -> None:
    storage = replicated(timedelta(seconds=30))
    claim = storage.claim("scope", key := new_key(), "fp", lease=LEASE)
    assert isinstance(claim, Claim)
    pair.replica.pause()
    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            completing = pool.submit(storage.complete, claim, RESPONSE, ttl=LEASE)
            wait_for(
                "the completion's write",
                lambda: state_on(pair.master, storage, key) == b"completed",
            )
            assert not completing.done()
        finally:
            pair.replica.resume()
        completing.result(timeout=30)

    assert state_on(pair.replica, storage, key) == b"completed"
    record = storage.get("scope", key)
    assert record is not None
    assert record.response == RESPONSE


def test_a_claim_that_finds_a_record_needs_no_replica(pair: Pair) -> None:
    storage = replicated()
    key = new_key()
    first = storage.claim("scope", key, "fp", lease=LEASE)
    assert isinstance(first, Claim)
    pair.replica.pause()
    try:
        # It wrote nothing: the record that stops it was held before.
        second = storage.claim("scope", key, "fp", lease=LEASE)
    finally:
        pair.replica.resume()

    assert isinstance(second, Record)
    assert second.state is State.IN_FLIGHT
    assert second.token == first.token


def test_a_master_that_lost_the_scripts_is_sent_them_again(pair: Pair) -> None:
    storage = replicated()
    storage.claim("scope", new_key(), "fp", lease=LEASE)
    with redis.Redis(port=pair.master.port) as client:
        client.script_flush()

    claim = storage.claim("scope", key := new_key(), "fp", lease=LEASE)

    assert isinstance(claim, Claim)
    assert state_on(pair.replica, storage, key) == b"in_flight"


def test_a_master_that_is_down_is_unavailable_after_the_deadline(pair: Pair) -> None:
    storage = replicated(timedelta(milliseconds=300))
    pair.master.kill()

    with pytest.raises(StorageUnavailable, match="did not reach a master"):
        storage.claim("scope", new_key(), "fp", lease=LEASE)


def test_a_release_is_not_waited_for(pair: Pair) -> None:
    # Losing a release keeps the key held until its lease ends: the safe direction.
    storage = replicated()
    claim = storage.claim("scope", new_key(), "fp", lease=LEASE)
    assert isinstance(claim, Claim)
    pair.replica.pause()
    try:
        assert storage.release(claim) is True
    finally:
        pair.replica.resume()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replicas": -1}, "CacheStorage.replicas is -1"),
        ({"replicas": True}, "CacheStorage.replicas is True"),
        ({"replicas": "1"}, "CacheStorage.replicas is '1'"),
        ({"replica_timeout": timedelta(0)}, "CacheStorage.replica_timeout is"),
        ({"replica_timeout": 0.25}, "CacheStorage.replica_timeout is 0.25"),
        ({"replica_deadline": timedelta(seconds=-1)}, "CacheStorage.replica_deadline is"),
        (
            {"replica_timeout": timedelta(seconds=2), "replica_deadline": timedelta(seconds=1)},
            "replica_deadline is shorter than replica_timeout",
        ),
    ],
)
def test_replica_options_that_mean_nothing_are_refused(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        CacheStorage("idempotency", **options)  # type: ignore[arg-type]


def test_a_subclass_is_refused_where_it_is_built() -> None:
    class Mistyped(CacheStorage):
        replicas = "all"  # type: ignore[assignment]

    with pytest.raises(ImproperlyConfigured, match=r"CacheStorage\.replicas is 'all'"):
        Mistyped()


def test_no_replica_is_waited_for_by_default() -> None:
    assert CacheStorage("idempotency").replicas == 0
