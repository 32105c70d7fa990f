"""What the configured storage holds, read the same way for the database and for Redis."""

from __future__ import annotations

from collections.abc import Iterator

from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import CacheStorage, Origin
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


def stored_token(key: str) -> str:
    """Return the owner's token of the one record of ``key`` the configured storage holds."""
    return _stored_field(key, "token")


def stored_origin(key: str) -> Origin:
    """Return what claimed the one record of ``key`` the configured storage holds."""
    storage = configured_storage()
    if not isinstance(storage, CacheStorage):
        record = IdempotencyKey.objects.get(key=key)
        return Origin(record.method, record.path)
    (name,) = redis_record_names(storage, key)
    kind, origin_name = storage._client().hmget(name, "origin_kind", "origin_name")
    return Origin(_text(kind), _text(origin_name))


def _text(field: object) -> str:
    assert isinstance(field, bytes), field  # the client never decodes (CacheStorage's check)
    return field.decode()


def redis_record_names(storage: CacheStorage, key: str | None = None) -> Iterator[bytes]:
    """Yield the Redis key of each record ``storage`` holds (only those of ``key``, if given)."""
    client = storage._client()
    for name in client.scan_iter(match=storage.record_key("*", "*").split("{")[0] + "*"):
        if key is None or client.hget(name, "key") == key.encode():
            yield name


def stored_fingerprint(key: str) -> str:
    """Return the fingerprint of the one record of ``key`` the configured storage holds."""
    return _stored_field(key, "fingerprint")


def _stored_field(key: str, field: str) -> str:
    # The model's field and the Redis hash's field share their names.
    storage = configured_storage()
    if not isinstance(storage, CacheStorage):
        return str(getattr(IdempotencyKey.objects.get(key=key), field))
    (name,) = redis_record_names(storage, key)
    return _text(storage._client().hget(name, field))


def rewrite_fingerprint(key: str, fingerprint: str) -> None:
    """Make the one record of ``key`` hold ``fingerprint``, as another release may have left it."""
    storage = configured_storage()
    if not isinstance(storage, CacheStorage):
        IdempotencyKey.objects.filter(key=key).update(fingerprint=fingerprint)
        return
    (name,) = redis_record_names(storage, key)
    storage._client().hset(name, "fingerprint", fingerprint)


def stored_body(key: str) -> bytes:
    """Return the body bytes the one record of ``key`` holds, exactly as stored."""
    storage = configured_storage()
    if not isinstance(storage, CacheStorage):
        return bytes(IdempotencyKey.objects.get(key=key).response_body)
    (name,) = redis_record_names(storage, key)
    body = storage._client().hget(name, "body")
    assert isinstance(body, bytes), body
    return body
