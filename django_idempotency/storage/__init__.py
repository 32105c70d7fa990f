"""Pluggable storages for idempotency records."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django_idempotency.storage.base import (
    Census,
    Claim,
    Count,
    Origin,
    OwnershipLost,
    Record,
    Replaced,
    State,
    Storage,
    StorageError,
    StorageUnavailable,
    StoredResponse,
)

if TYPE_CHECKING:
    from django_idempotency.storage.cache import CacheStorage
    from django_idempotency.storage.database import DatabaseStorage

__all__ = [
    "CacheStorage",
    "Census",
    "Claim",
    "Count",
    "DatabaseStorage",
    "Origin",
    "OwnershipLost",
    "Record",
    "Replaced",
    "State",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "StoredResponse",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: the database storage needs the app registry, which
    # may not be ready when a views module imports the mixin.
    if name == "DatabaseStorage":
        from django_idempotency.storage.database import DatabaseStorage

        return DatabaseStorage
    if name == "CacheStorage":
        from django_idempotency.storage.cache import CacheStorage

        return CacheStorage
    raise AttributeError(name)
