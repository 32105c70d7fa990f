"""Records in the ``IdempotencyKey`` model, completed in the view's own transaction."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, router, transaction
from django.db.models import QuerySet
from django.utils import timezone

from django_idempotency.conf import idempotency_settings
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage.base import (
    Claim,
    OwnershipLost,
    Record,
    State,
    Storage,
    StorageUnavailable,
    StoredResponse,
    new_token,
)

# A claim races at most a few times: each lost race means another request wrote the
# record, which the next read then returns.
_CLAIM_ATTEMPTS = 3


class DatabaseStorage(Storage):
    """Claim first in a short transaction; complete inside the view's transaction (DESIGN §5)."""

    is_transactional = True

    def __init__(
        self, using: str | None = None, *, clock: Callable[[], datetime] = timezone.now
    ) -> None:
        self._using = using
        self.clock = clock

    @property
    def using(self) -> str:
        return self._using or idempotency_settings.DATABASE or router.db_for_write(IdempotencyKey)

    def claim(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        lease: timedelta,
        method: str = "",
        path: str = "",
    ) -> Claim | Record:
        records = IdempotencyKey.objects.using(self.using)
        try:
            for _attempt in range(_CLAIM_ATTEMPTS):
                now = self.clock()
                row = _only(records.filter(scope=scope, key=key))
                if row is not None and row.expires_at > now:
                    return _to_record(row)
                claim = Claim(scope, key, fingerprint, new_token(), now + lease)
                fields = {
                    "state": State.IN_FLIGHT,
                    "fingerprint": fingerprint,
                    "token": claim.token,
                    "method": method,
                    "path": path,
                    "created_at": now,
                    "completed_at": None,
                    "expires_at": claim.expires_at,
                    "response_status": None,
                    "response_headers": [],
                    "response_body": b"",
                }
                if row is None:
                    try:
                        with transaction.atomic(using=self.using):
                            records.create(scope=scope, key=key, **fields)
                    except IntegrityError:
                        continue
                    return claim
                # Take over a dead record, but only the one we read, and only while it is
                # still dead: a concurrent completion moves expires_at into the future.
                taken = records.filter(pk=row.pk, token=row.token, expires_at__lte=now).update(
                    **fields
                )
                if taken:
                    return claim
        except DatabaseError as exc:
            raise StorageUnavailable("the idempotency database did not answer") from exc
        raise StorageUnavailable("the idempotency key is contended; retry")

    def complete(
        self, claim: Claim, response: StoredResponse, *, ttl: timedelta, replayable: bool = True
    ) -> None:
        now = self.clock()
        try:
            completed = (
                IdempotencyKey.objects.using(self.using)
                .filter(
                    scope=claim.scope,
                    key=claim.key,
                    token=claim.token,
                    state=State.IN_FLIGHT,
                    expires_at__gt=now,
                )
                .update(
                    state=State.COMPLETED if replayable else State.NOT_REPLAYABLE,
                    completed_at=now,
                    expires_at=now + ttl,
                    response_status=response.status,
                    response_headers=[list(pair) for pair in response.headers],
                    response_body=response.body if replayable else b"",
                )
            )
        except DatabaseError as exc:
            raise StorageUnavailable("the idempotency database did not answer") from exc
        if not completed:
            raise OwnershipLost(f"the claim on {claim.key!r} ended before the view finished")

    def release(self, claim: Claim) -> bool:
        try:
            deleted, _ = (
                IdempotencyKey.objects.using(self.using)
                .filter(scope=claim.scope, key=claim.key, token=claim.token, state=State.IN_FLIGHT)
                .delete()
            )
        except DatabaseError as exc:
            raise StorageUnavailable("the idempotency database did not answer") from exc
        return bool(deleted)

    def get(self, scope: str, key: str) -> Record | None:
        try:
            row = _only(
                IdempotencyKey.objects.using(self.using).filter(
                    scope=scope, key=key, expires_at__gt=self.clock()
                )
            )
        except DatabaseError as exc:
            raise StorageUnavailable("the idempotency database did not answer") from exc
        return None if row is None else _to_record(row)

    def is_rollback_marked(self) -> bool:
        return transaction.get_rollback(using=self.using)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        with transaction.atomic(using=self.using):
            yield


def _only(records: QuerySet[IdempotencyKey]) -> IdempotencyKey | None:
    # (scope, key) is unique, so no ORDER BY: first() would add one, and compiling it was
    # a fifth of the ORM's time on every claim and replay (docs/benchmarks.md).
    return next(iter(records[:1]), None)


def _to_record(row: IdempotencyKey) -> Record:
    state = State(row.state)
    response = None
    if state is not State.IN_FLIGHT and row.response_status is not None:
        response = StoredResponse(
            status=row.response_status,
            headers=tuple((str(name), str(value)) for name, value in row.response_headers),
            body=bytes(row.response_body),
        )
    return Record(
        scope=row.scope,
        key=row.key,
        state=state,
        fingerprint=row.fingerprint,
        token=row.token,
        expires_at=row.expires_at,
        response=response,
    )
