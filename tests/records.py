"""What the configured storage holds, read the same way for the database and for Redis."""

from __future__ import annotations

from django_idempotency.conf import idempotency_settings
from django_idempotency.models import IdempotencyKey
from django_idempotency.policy import get_storage
from django_idempotency.storage import CacheStorage


def stored_records() -> list[tuple[str, str, str]]:
    """Return (scope, key, state) of every record the configured storage holds, sorted."""
    storage = get_storage(idempotency_settings.STORAGE)
    if not isinstance(storage, CacheStorage):
        return sorted(IdempotencyKey.objects.values_list("scope", "key", "state"))
    client = storage._client()
    records = []
    for name in client.scan_iter(match=storage.record_key("*", "*").split("{")[0] + "*"):
        scope, key, state = client.hmget(name, "scope", "key", "state")
        records.append((scope.decode(), key.decode(), state.decode()))
    return sorted(records)
