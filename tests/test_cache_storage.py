"""What only CacheStorage promises: key shape, round trips, outages and refusing a bad cache."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django_redis import get_redis_connection  # type: ignore[import-untyped]

from django_idempotency.checks_cache import check_cache_storage
from django_idempotency.storage import (
    CacheStorage,
    Claim,
    Origin,
    Record,
    State,
    StorageUnavailable,
    StoredResponse,
)
from tests.redis_servers import (
    RedisServer,
    caches_with,
    free_port,
    redis_cache_config,
)

LONG = timedelta(seconds=30)
RESPONSE = StoredResponse(201, (("Content-Type", "application/json"),), b'{"id": 7}')
# Socket timeouts are 1 s; an outage must be reported well before a client gives up.
OUTAGE_DEADLINE = 3.0


@pytest.fixture
def storage(redis_cache: object) -> CacheStorage:
    return CacheStorage("idempotency")


@pytest.fixture
def key() -> str:
    return f"key-{uuid.uuid4()}"


def claim(storage: CacheStorage, key: str, lease: timedelta = LONG) -> Claim:
    result = storage.claim("scope", key, "fp", lease=lease, origin=Origin("POST", "/orders"))
    assert isinstance(result, Claim)
    return result


# Key shape and expiry


@pytest.mark.redis
def test_record_key__is_one_hash_tagged_key(storage: CacheStorage, key: str) -> None:
    record_key = storage.record_key("scope", key)

    assert re.fullmatch(r"idempotency:\{[0-9a-f]{64}\}", record_key)
    assert record_key != storage.record_key("other-scope", key)


def test_record_key__uses_cache_key_prefix(key: str) -> None:
    config = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6379/15",
        "KEY_PREFIX": "shop",
    }
    with override_settings(CACHES=caches_with(config)):
        record_key = CacheStorage("idempotency").record_key("scope", key)

    assert re.fullmatch(r"shop:idempotency:\{[0-9a-f]{64}\}", record_key)


@pytest.mark.redis
def test_claim__stores_one_key_with_lease_ttl_then_retention_ttl(
    private_redis: RedisServer, key: str
) -> None:
    # A private server, so that the key count sees no other test's records.
    storage = CacheStorage("idempotency")
    client = get_redis_connection("idempotency")

    owner = claim(storage, key, lease=timedelta(seconds=40))

    assert client.keys("*") == [storage.record_key("scope", key).encode()]
    assert 38_000 < client.pttl(storage.record_key("scope", key)) <= 40_000
    storage.complete(owner, RESPONSE, ttl=timedelta(hours=2))
    assert client.keys("*") == [storage.record_key("scope", key).encode()]
    assert 7_100_000 < client.pttl(storage.record_key("scope", key)) <= 7_200_000


@pytest.mark.redis
def test_claim__keeps_the_origin_for_operators(storage: CacheStorage, key: str) -> None:
    claim(storage, key)

    fields = get_redis_connection("idempotency").hgetall(storage.record_key("scope", key))

    assert (fields[b"origin_kind"], fields[b"origin_name"]) == (b"POST", b"/orders")


@pytest.mark.redis
def test_claim__replays_a_record_written_before_the_origin_fields(
    storage: CacheStorage, key: str
) -> None:
    # A completed record as the previous version's scripts left it: the origin in ``method``
    # and ``path`` fields. Nothing reads the origin, so it replays unchanged.
    name = storage.record_key("scope", key)
    client = get_redis_connection("idempotency")
    client.hset(
        name,
        mapping={
            "state": "completed",
            "token": "t" * 32,
            "fingerprint": "fp",
            "scope": "scope",
            "key": key,
            "method": "POST",
            "path": "/orders",
            "status": 201,
            "headers": '[["Content-Type", "application/json"]]',
            "body": b'{"id": 7}',
        },
    )
    client.pexpire(name, 60_000)

    replay = storage.claim("scope", key, "fp", lease=LONG, origin=Origin("POST", "/orders"))

    assert isinstance(replay, Record)
    assert (replay.state, replay.fingerprint, replay.response) == (State.COMPLETED, "fp", RESPONSE)
    stored = storage.get("scope", key)
    assert stored is not None
    assert stored.response == RESPONSE


@pytest.mark.redis
def test_claim__runs_again_after_script_cache_flush(storage: CacheStorage, key: str) -> None:
    claim(storage, f"{key}-warm")
    get_redis_connection("idempotency").script_flush()

    owner = claim(storage, key)

    assert storage.get("scope", key) is not None
    assert storage.release(owner)


@pytest.mark.redis
def test_claim__repeated_with_same_token_keeps_ownership(
    storage: CacheStorage, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim whose reply got lost is sent again by redis-py with the same token; the
    # retry must find itself the owner, not a stranger's in-flight record.
    monkeypatch.setattr("django_idempotency.storage.cache.new_token", lambda: "t" * 32)
    first = claim(storage, key)

    again = storage.claim("scope", key, "fp", lease=LONG)

    assert isinstance(again, Claim)
    assert again.token == first.token


@pytest.mark.redis
def test_complete__repeated_by_same_owner_succeeds(storage: CacheStorage, key: str) -> None:
    # Likewise a completion whose reply got lost must not report a lost ownership.
    owner = claim(storage, key)
    storage.complete(owner, RESPONSE, ttl=LONG)

    storage.complete(owner, RESPONSE, ttl=LONG)

    record = storage.get("scope", key)
    assert record is not None
    assert (record.state, record.response) == (State.COMPLETED, RESPONSE)


@pytest.mark.redis
def test_claim__racing_threads_make_exactly_one_owner(storage: CacheStorage, key: str) -> None:
    racers = 16
    barrier = threading.Barrier(racers)

    def race(_: int) -> Claim | Record:
        barrier.wait()
        return storage.claim("scope", key, "fp", lease=LONG)

    with ThreadPoolExecutor(racers) as pool:
        results = list(pool.map(race, range(racers)))

    owners = [result for result in results if isinstance(result, Claim)]
    assert len(owners) == 1
    assert {result.token for result in results} == {owners[0].token}


# Round trips on the request path


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record every write of a command (or pipeline) to a Redis socket."""
    sent: list[bytes] = []
    original: Callable[..., None] = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        sent.append(b"".join(command) if isinstance(command, list) else bytes(command))
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return sent


@pytest.mark.redis
def test_round_trips__first_request_takes_two(
    storage: CacheStorage, key: str, round_trips: list[bytes]
) -> None:
    storage.complete(claim(storage, f"{key}-warm"), RESPONSE, ttl=LONG)
    round_trips.clear()

    owner = claim(storage, key)
    storage.complete(owner, RESPONSE, ttl=LONG)

    assert len(round_trips) == 2


@pytest.mark.redis
def test_round_trips__replay_takes_one(
    storage: CacheStorage, key: str, round_trips: list[bytes]
) -> None:
    storage.complete(claim(storage, key), RESPONSE, ttl=LONG)
    round_trips.clear()

    replay = storage.claim("scope", key, "fp", lease=LONG)

    assert isinstance(replay, Record)
    assert replay.response == RESPONSE
    assert len(round_trips) == 1


@pytest.mark.redis
def test_round_trips__in_flight_conflict_takes_one(
    storage: CacheStorage, key: str, round_trips: list[bytes]
) -> None:
    claim(storage, key)
    round_trips.clear()

    assert isinstance(storage.claim("scope", key, "fp", lease=LONG), Record)
    assert len(round_trips) == 1


# Configuration errors at first use


#: A cache that cannot hold keys, by the check that reports it.
UNSAFE_CACHES: dict[str, dict[str, Any] | None] = {
    "E101": None,  # no cache by that alias
    "E102": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "E103": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://x"},
    "E106": {"decode_responses": True},
}


@pytest.mark.parametrize("check_id", UNSAFE_CACHES)
def test_claim__an_unsafe_cache_is_refused_in_the_words_of_its_check(
    key: str, check_id: str
) -> None:
    config = UNSAFE_CACHES[check_id]
    if config is None:
        caches: dict[str, Any] = caches_with({"BACKEND": "django_redis.cache.RedisCache"})
        caches.pop("idempotency")
    elif "decode_responses" in config:
        caches = caches_with(redis_cache_config(free_port(), CONNECTION_POOL_KWARGS=config))
    else:
        caches = caches_with(config)
    with override_settings(
        CACHES=caches,
        IDEMPOTENCY_STORAGE="django_idempotency.storage.CacheStorage",
        IDEMPOTENCY_CACHE_ALIAS="idempotency",
    ):
        [reported] = check_cache_storage(None)
        with pytest.raises(ImproperlyConfigured) as refused:
            CacheStorage("idempotency").claim("scope", key, "fp", lease=LONG)

    assert reported.id == f"django_idempotency.{check_id}"
    assert str(refused.value) == f"{reported.msg} {reported.hint} ({reported.id})"


def test_claim__missing_alias_raises_improperly_configured_naming_the_setting(key: str) -> None:
    expected = "IDEMPOTENCY_CACHE_ALIAS is 'nowhere', but CACHES has no cache"
    with pytest.raises(ImproperlyConfigured, match=re.escape(expected)):
        CacheStorage("nowhere").claim("scope", key, "fp", lease=LONG)


def test_get__sharded_client_is_refused_at_first_use(key: str) -> None:
    # Building the sharded client opens no connection: no Redis server is needed.
    config = redis_cache_config(free_port(), CLIENT_CLASS="django_redis.client.ShardClient")

    with (
        override_settings(CACHES=caches_with(config)),
        pytest.raises(ImproperlyConfigured, match="the sharded client is not supported"),
    ):
        CacheStorage("idempotency").get("scope", key)


def test_alias__defaults_to_setting() -> None:
    with override_settings(IDEMPOTENCY_CACHE_ALIAS="somewhere"):
        assert CacheStorage().alias == "somewhere"
    assert CacheStorage("explicit").alias == "explicit"


# Outages: fail closed, promptly


def assert_every_operation_unavailable(storage: CacheStorage, owner: Claim) -> None:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        storage.claim("scope", owner.key, "fp", lease=LONG)
    with pytest.raises(StorageUnavailable):
        storage.get("scope", owner.key)
    with pytest.raises(StorageUnavailable):
        storage.complete(owner, RESPONSE, ttl=LONG)
    with pytest.raises(StorageUnavailable):
        storage.release(owner)
    assert time.monotonic() - started < 4 * OUTAGE_DEADLINE


def test_outage__closed_port_raises_storage_unavailable(key: str) -> None:
    with override_settings(CACHES=caches_with(redis_cache_config(free_port()))):
        storage = CacheStorage("idempotency")
        owner = Claim("scope", key, "fp", "token", expires_at=storage.clock() + LONG)

        assert_every_operation_unavailable(storage, owner)


def test_outage__ignore_exceptions_cache_still_raises(key: str) -> None:
    config = redis_cache_config(free_port(), IGNORE_EXCEPTIONS=True)
    with override_settings(CACHES=caches_with(config)):
        from django.core.cache import caches

        # The trap the storage avoids: through the cache API an outage is a silent miss.
        assert caches["idempotency"].get("anything") is None
        storage = CacheStorage("idempotency")
        owner = Claim("scope", key, "fp", "token", expires_at=storage.clock() + LONG)

        assert_every_operation_unavailable(storage, owner)


@pytest.mark.redis
def test_outage__redis_stopped_mid_run_raises_then_recovers(
    private_redis: RedisServer, key: str
) -> None:
    storage = CacheStorage("idempotency")
    owner = claim(storage, key)
    assert storage.get("scope", key) is not None

    private_redis.stop()

    assert_every_operation_unavailable(storage, owner)
    private_redis.start()
    # The restarted Redis kept nothing (no persistence): the key is claimable again.
    assert isinstance(storage.claim("scope", key, "fp", lease=LONG), Claim)


@pytest.mark.redis
def test_outage__redis_stopped_between_claim_and_complete(
    private_redis: RedisServer, key: str
) -> None:
    storage = CacheStorage("idempotency")
    owner = claim(storage, key)
    private_redis.stop()

    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        storage.complete(owner, RESPONSE, ttl=LONG)

    assert time.monotonic() - started < OUTAGE_DEADLINE


@pytest.mark.redis
def test_outage__redis_out_of_memory_raises_storage_unavailable(
    private_redis: RedisServer, key: str
) -> None:
    client = get_redis_connection("idempotency")
    client.config_set("maxmemory", "1")
    client.config_set("maxmemory-policy", "noeviction")

    with pytest.raises(StorageUnavailable):
        CacheStorage("idempotency").claim("scope", key, "fp", lease=LONG)
