"""What operators do to CacheStorage's records: look one up, list those in flight, drop one.

The admin's Redis view (``admin/redis_view.py``) asks these; each write is fenced by the token
the operator saw, as the model admin's actions are: a record that a request completed or
took over meanwhile is left alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from redis.exceptions import RedisError

from django_idempotency.storage.base import State, StorageUnavailable, StoredResponse
from django_idempotency.storage.cache import CENSUS_SAMPLE, CacheStorage

_FIELDS = (
    "state",
    "token",
    "fingerprint",
    "scope",
    "key",
    "origin_kind",
    "origin_name",
    "lease",
    "status",
    "headers",
    "body",
)
#: What the in-flight list reads of each sampled record: all but the stored response.
_LISTED_FIELDS = _FIELDS[:-3]
_UNAVAILABLE = "the idempotency cache did not answer"


@dataclass(frozen=True)
class CachedRecord:
    """One Redis record as an operator sees it: every field, and how long it has left."""

    scope: str
    key: str
    state: State
    token: str
    fingerprint: str
    origin_kind: str
    origin_name: str
    expires_in: timedelta
    #: How long it has run, for an in-flight record (its lease minus its remaining TTL).
    running_for: timedelta | None
    response: StoredResponse | None

    @property
    def is_in_flight(self) -> bool:
        return self.state is State.IN_FLIGHT


def look_up(storage: CacheStorage, scope: str, key: str) -> CachedRecord | None:
    """Return the record of (scope, key), or ``None`` when Redis holds none."""
    client = storage._client()
    name = storage.record_key(scope, key)
    try:
        pipeline = client.pipeline(transaction=False)
        pipeline.hmget(name, *_FIELDS)
        pipeline.pttl(name)
        fields, pttl = pipeline.execute()
    except (RedisError, OSError) as exc:
        raise StorageUnavailable(_UNAVAILABLE) from exc
    return _to_cached(fields, int(pttl))


def in_flight(
    storage: CacheStorage, *, sample: int = CENSUS_SAMPLE, limit: int = 100
) -> tuple[list[CachedRecord], bool]:
    """Return up to ``limit`` in-flight records, longest-running first, from a bounded ``SCAN``.

    The second value says whether the scan saw every record (else the list is of those it
    sampled: approximate, as the census is).
    """
    client = storage._client()
    try:
        names, complete = storage._scan(client, sample)
        pipeline = client.pipeline(transaction=False)
        for name in names:
            # Never a stored body: the sample may hold thousands of them, each up to
            # IDEMPOTENCY_MAX_RESPONSE_SIZE, and an in-flight record has none.
            pipeline.hmget(name, *_LISTED_FIELDS)
            pipeline.pttl(name)
        replies = pipeline.execute()
    except (RedisError, OSError) as exc:
        raise StorageUnavailable(_UNAVAILABLE) from exc
    no_response = [None, None, None]  # status, headers, body: not read
    records = [
        record
        for fields, pttl in zip(replies[::2], replies[1::2], strict=True)
        if (record := _to_cached([*fields, *no_response], int(pttl))) is not None
        and record.is_in_flight
    ]
    records.sort(key=lambda record: record.running_for or timedelta(0), reverse=True)
    return records[:limit], complete


def drop_as_seen(
    storage: CacheStorage, scope: str, key: str, token: str, state: State, *, release: bool
) -> bool:
    """Delete the record if it still carries ``token`` and ``state``; return whether it did.

    Both, since a completion keeps its claim's token: an in-flight record seen, completed
    since, is left alone. ``release`` frees an in-flight key (and forgets its tombstone);
    otherwise the record expires now (its tombstone, if kept, stays).
    """
    if release and state is not State.IN_FLIGHT:
        return False
    keys = storage._keys(scope, key)
    mode = "release" if release else "expire"
    return bool(storage._run("drop", keys, token, state.value, mode))


def _to_cached(fields: list[bytes | None], pttl: int) -> CachedRecord | None:
    state, token, fingerprint, scope, key, kind, name, lease, status, headers, body = fields
    if state is None or scope is None or key is None:
        return None  # gone meanwhile, or not a record this app wrote
    parsed = State(state.decode())
    expires_in = timedelta(milliseconds=max(0, pttl))
    running_for = None
    if parsed is State.IN_FLIGHT and lease is not None and pttl >= 0:
        running_for = timedelta(milliseconds=max(0, int(lease) - pttl))
    response = None
    if parsed is not State.IN_FLIGHT and status:
        pairs = json.loads(headers or b"[]")
        response = StoredResponse(
            status=int(status),
            headers=tuple((str(header), str(value)) for header, value in pairs),
            body=bytes(body or b""),
        )
    return CachedRecord(
        scope=scope.decode(),
        key=key.decode(),
        state=parsed,
        token=_text(token),
        fingerprint=_text(fingerprint),
        origin_kind=_text(kind),
        origin_name=_text(name),
        expires_in=expires_in,
        running_for=running_for,
        response=response,
    )


def _text(field: bytes | None) -> str:
    return field.decode() if field is not None else ""
