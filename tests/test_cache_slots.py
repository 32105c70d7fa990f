"""Every multi-key Redis command of CacheStorage touches one hash slot, as Redis Cluster needs.

A record and its tombstone share a hash tag; each script names both (KEYS[1], KEYS[2]), and a
script whose keys fall in two slots fails on a cluster with CROSSSLOT. Every command the
storage sends to a real Redis during a record's whole life (claim, takeover, completion,
release, lookup, erasure, census, the admin's fenced drop) is recorded here, for scopes and
keys of every shape, and each script's and each multi-key command's keys are checked to map
to one slot with redis-py's own ``key_slot``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis
from redis.crc import key_slot

from django_idempotency.storage import Claim, StoredResponse
from django_idempotency.storage.base import State
from django_idempotency.storage.cache_operations import drop_as_seen
from tests.leases import expire_now
from tests.testapp.storages import TombstoneCacheStorage

pytestmark = pytest.mark.redis

#: Commands that take several keys, and where their keys are in the arguments.
MULTI_KEY = {"DEL", "UNLINK", "EXISTS", "MGET", "TOUCH"}
LEASE = timedelta(minutes=5)


@pytest.fixture
def commands(redis_cache: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Every command sent to Redis while the test runs, pipelined ones included."""
    sent: list[tuple[Any, ...]] = []
    original: Any = Redis.execute_command

    def record(self: Redis, *args: Any, **options: Any) -> Any:
        sent.append(args)
        return original(self, *args, **options)

    monkeypatch.setattr(Redis, "execute_command", record)
    from redis.client import Pipeline

    original_pipeline: Any = Pipeline.execute_command

    def record_pipelined(self: Pipeline, *args: Any, **options: Any) -> Any:
        sent.append(args)
        return original_pipeline(self, *args, **options)

    monkeypatch.setattr(Pipeline, "execute_command", record_pipelined)
    return sent


def slots_of(command: tuple[Any, ...]) -> set[int] | None:
    """Return the hash slots a command's keys fall in; None for a command of one key or none."""
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        keys = command[3 : 3 + int(command[2])]
    elif name in MULTI_KEY and len(command) > 2:
        keys = command[1:]
    else:
        return None
    return {key_slot(key.encode() if isinstance(key, str) else key) for key in keys}


def a_records_whole_life(storage: TombstoneCacheStorage, scope: str, key: str) -> None:
    """Claim, release, claim, lose the lease, be taken over, complete, replay, erase."""
    response = StoredResponse(201, (("Content-Type", "application/json"),), b"{}")
    first = storage.claim(scope, key, "fp", lease=LEASE)
    assert isinstance(first, Claim)
    assert storage.release(first)
    dead = storage.claim(scope, key, "fp", lease=LEASE)
    assert isinstance(dead, Claim)
    expire_now(key, storage=storage)
    owner = storage.claim(scope, key, "fp", lease=LEASE)  # takes the dead claim over
    assert isinstance(owner, Claim)
    storage.complete(owner, response, ttl=LEASE)
    replay = storage.claim(scope, key, "fp", lease=LEASE)
    assert not isinstance(replay, Claim)
    record = storage.get(scope, key)
    assert record is not None
    assert drop_as_seen(storage, scope, key, record.token, State.COMPLETED, release=False)
    storage.census()
    storage.count_scope(scope)
    list(storage.erase_scope(scope))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    scope=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    key=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
)
def test_every_script_and_multi_key_command__touches_one_slot(
    commands: list[tuple[Any, ...]], scope: str, key: str
) -> None:
    commands.clear()
    a_records_whole_life(TombstoneCacheStorage("idempotency"), scope, key)

    checked = [(command[0], slots_of(command)) for command in commands]
    scripts = [slots for name, slots in checked if str(name).upper() in ("EVALSHA", "EVAL")]
    assert scripts, "no script ran"
    assert all(slots is None or len(slots) == 1 for _name, slots in checked), checked
