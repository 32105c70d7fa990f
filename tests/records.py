"""What the configured storage holds, read the same way for the database and for Redis."""

from __future__ import annotations

from collections.abc import Iterator

from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import CacheStorage
from django_idempotency.storage.registry import configured_storage


def stored_records() -> list[tuple[str, str, str]]:
    """Return (scope, key, state) of every record the configured storage holds, sorted."""
    storage = configured_storage()
    if not isinstance(storage, CacheStorage):
        return sorted(IdempotencyKey.objects.values_list("scope", "key", "state"))
    client = storage._client()
    records = []
    for name in redis_record_names(storage):
        scope, key, state = client.hmget(name, "scope", "key", "state")
        records.append((_text(scope), _text(key), _text(state)))
    return sorted(records)


def _text(field: object) -> str:
    assert isinstance(field, bytes), field  # the client never decodes (CacheStorage's check)
    return field.decode()


def redis_record_names(storage: CacheStorage, key: str | None = None) -> Iterator[bytes]:
    """Yield the Redis key of each record ``storage`` holds (only those of ``key``, if given)."""
    client = storage._client()
    for name in client.scan_iter(match=storage.record_key("*", "*").split("{")[0] + "*"):
        if key is None or client.hget(name, "key") == key.encode():
            yield name
