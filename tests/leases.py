"""End a record's lease or retention in the store itself, so lease tests never race a clock.

A test that waits for a short lease with ``time.sleep`` fails on a slow machine (issue 7, item
9). These helpers move the record's expiry into the past by the store's own clock, or wait
until the store says it passed, which is what the storage reads when it decides.
"""

from __future__ import annotations

import time
from datetime import timedelta

from django_idempotency.clock import database_now
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import CacheStorage, DatabaseStorage, Storage
from django_idempotency.storage.registry import configured_storage
from tests.records import redis_record_names

#: How long wait_for_expiry waits before the test fails instead of hanging.
WAIT_LIMIT = 30.0


def expire_now(key: str, *, storage: Storage | None = None) -> None:
    """Move the expiry of every record of ``key`` (any scope) into the past, in the store.

    For an in-flight record that ends its lease, as if its owner had been slower than it;
    for a completed one it ends its retention. Fails when the store holds no record of ``key``,
    so a test built on it cannot pass by expiring nothing.
    """
    storage = storage or configured_storage()
    if isinstance(storage, CacheStorage):
        client = storage._client()
        names = list(redis_record_names(storage, key))
        assert names, f"Redis holds no record of {key!r}"
        for name in names:
            # An expiry in the past deletes the key at once: what Redis does when a TTL ends.
            client.pexpireat(name, 1)
        return
    assert isinstance(storage, DatabaseStorage), storage
    past = database_now(storage.using) - timedelta(seconds=1)
    updated = IdempotencyKey.objects.using(storage.using).filter(key=key).update(expires_at=past)
    assert updated, f"the database holds no record of {key!r}"


def wait_for_expiry(key: str, *, storage: Storage | None = None) -> None:
    """Wait until the store's clock passes the expiry of every record of ``key``.

    For code that runs inside the owner's own transaction, where a write to the record would
    roll back with it: it observes the store's clock instead of sleeping for a guessed time.
    """
    storage = storage or configured_storage()
    deadline = time.monotonic() + WAIT_LIMIT
    while not _is_expired(storage, key):
        assert time.monotonic() < deadline, f"the record of {key!r} did not expire"
        time.sleep(0.01)


def _is_expired(storage: Storage, key: str) -> bool:
    if isinstance(storage, CacheStorage):
        return next(redis_record_names(storage, key), None) is None
    assert isinstance(storage, DatabaseStorage), storage
    expiries = IdempotencyKey.objects.using(storage.using).filter(key=key)
    latest = max(expiries.values_list("expires_at", flat=True), default=None)
    return latest is None or latest <= database_now(storage.using)


def uses_tombstones(storage: Storage | None = None) -> bool:
    """Whether the storage still knows a record after it expired (so can tell a retry late).

    ``DatabaseStorage`` keeps the row until the purge; ``CacheStorage`` only with tombstones.
    """
    storage = storage or configured_storage()
    if isinstance(storage, CacheStorage):
        return storage.tombstone > timedelta(0)
    return True
