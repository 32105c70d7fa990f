"""Storages configured as a project would, by subclassing: the tests name them by path."""

from __future__ import annotations

from datetime import timedelta

from django_idempotency.storage.cache import CacheStorage
from django_idempotency.storage.moving import MovingStorage


class TombstoneCacheStorage(CacheStorage):
    """A ``CacheStorage`` that keeps each record's tombstone an hour past it."""

    tombstone = timedelta(hours=1)


class DatabaseToCache(MovingStorage):
    """The move from the database to Redis, as a project would configure it."""

    old = "django_idempotency.storage.DatabaseStorage"
    new = "django_idempotency.storage.CacheStorage"


class CacheToDatabase(MovingStorage):
    """The move back, from Redis to the database."""

    old = "django_idempotency.storage.CacheStorage"
    new = "django_idempotency.storage.DatabaseStorage"


class ReplicatedCacheStorage(CacheStorage):
    """A ``CacheStorage`` whose claims and completions count once a replica holds them."""

    replicas = 1
    # Long enough to ride out a whole Sentinel failover (the old master is demoted about
    # ten seconds after its replica is promoted), far shorter than the tests' leases.
    replica_deadline = timedelta(seconds=30)
