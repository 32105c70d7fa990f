"""Storages configured as a project would, by subclassing: the tests name them by path."""

from __future__ import annotations

from datetime import timedelta

from django_idempotency.storage.cache import CacheStorage


class TombstoneCacheStorage(CacheStorage):
    """A ``CacheStorage`` that keeps each record's tombstone an hour past it."""

    tombstone = timedelta(hours=1)
