"""Records in the ``IdempotencyKey`` model, completed in the view's own transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, IntegrityError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from django_idempotency.clock import to_datetime
from django_idempotency.models import (
    FINGERPRINT_MAX_LENGTH,
    METHOD_MAX_LENGTH,
    SCOPE_MAX_LENGTH,
    IdempotencyKey,
    records_database,
)
from django_idempotency.storage import postgresql
from django_idempotency.storage.base import (
    ERASE_BATCH_SIZE,
    Census,
    Claim,
    Count,
    Origin,
    OwnershipLost,
    Record,
    Replaced,
    State,
    Storage,
    StorageUnavailable,
    StoredResponse,
    new_token,
)
from django_idempotency.storage.database_sql import (
    Statements,
    adapt_datetime,
    adapt_json,
    execute,
    fetch_one,
    statements,
)

# A claim races at most a few times: each lost race means another request wrote the
# record, which the next read then returns.
_CLAIM_ATTEMPTS = 3
_UNAVAILABLE = "the idempotency database did not answer"
_CONTENDED = "the idempotency key is contended; retry"
#: The connection attribute naming the outermost block that ``atomic()`` opened, if any.
_OWN_BLOCK = "_django_idempotency_block"


class DatabaseStorage(Storage):
    """Claim first in a short transaction; complete inside the view's transaction (DESIGN §5).

    The request path speaks plain SQL, quoted and adapted by Django's own backend
    operations so it runs on every database Django supports: compiling the same three
    ORM queries cost more than the view it protects (docs/benchmarks.md). On PostgreSQL
    the claim and the completion call the same statements as functions (migration 0002):
    the server keeps their plans, and a claim is one round trip. Operators' tools (admin,
    purge) use the ORM.

    Leases and retention are measured by the database server's clock (``clock.now_sql``),
    read by the claim's own SELECT, so app servers whose clocks disagree agree on when a
    lease ends. ``clock`` is the app's clock, used only where the database's is the app's
    (SQLite) or unknown.
    """

    is_transactional = True
    max_scope_length = SCOPE_MAX_LENGTH
    max_fingerprint_length = FINGERPRINT_MAX_LENGTH
    #: Whether a claim made outside a transaction waits for its WAL flush on PostgreSQL.
    #: ``False`` saves a flush per first request; a database crash within moments of the
    #: claim can then lose it, and a retry may overlap a view still running: opt in only
    #: after reading docs/design-choice.md, "The claim's commit".
    flush_claims = True

    def __init__(
        self,
        using: str | None = None,
        *,
        clock: Callable[[], datetime] = timezone.now,
        flush_claims: bool | None = None,
    ) -> None:
        self._using = using
        self.clock = clock
        if flush_claims is not None:
            self.flush_claims = flush_claims

    @property
    def using(self) -> str:
        return self._using or records_database()

    def claim(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        lease: timedelta,
        origin: Origin = Origin(),
    ) -> Claim | Record:
        connection = connections[self.using]
        sql = statements(connection)
        # A label for the operator who finds the record, so a kind longer than its column
        # is cut rather than fail the claim.
        kind = origin.kind[:METHOD_MAX_LENGTH]
        token = new_token()
        try:
            if sql.functions:
                return self._claim_by_function(
                    connection,
                    scope,
                    key,
                    fingerprint,
                    token,
                    lease,
                    kind,
                    origin.name,
                )
            for _attempt in range(_CLAIM_ATTEMPTS):
                now, row = self._read(connection, sql, scope, key)
                if row is not None and to_datetime(row[4]) > now:
                    return _to_record(scope, key, row)
                claim = Claim(scope, key, fingerprint, token, now + lease, claimed_at=now)
                fresh = [
                    State.IN_FLIGHT.value,
                    fingerprint,
                    claim.token,
                    kind,
                    origin.name,
                    adapt_datetime(connection, now),
                    adapt_datetime(connection, claim.expires_at),
                    adapt_json(connection, []),
                    b"",
                ]
                if row is None:
                    # Alone, an INSERT is its own transaction; inside someone's atomic block
                    # a savepoint keeps a lost race from breaking their transaction.
                    guard = (
                        transaction.atomic(using=self.using)
                        if connection.in_atomic_block
                        else nullcontext()
                    )
                    try:
                        with guard:
                            execute(connection, sql.insert, [scope, key, *fresh])
                    except IntegrityError:
                        continue
                    return claim
                # Take over a dead record, but only the one we read, and only while it is
                # still dead: a concurrent completion moves expires_at into the future.
                expired = [row[0], row[3], adapt_datetime(connection, now)]
                if execute(connection, sql.take_over, [*fresh, *expired]):
                    return replace(claim, replaced=_replaced(row[1], row[4], now))
        except DatabaseError as exc:
            raise StorageUnavailable(_UNAVAILABLE) from exc
        raise StorageUnavailable(_CONTENDED)

    def _claim_by_function(
        self,
        connection: BaseDatabaseWrapper,
        scope: str,
        key: str,
        fingerprint: str,
        token: str,
        lease: timedelta,
        kind: str,
        name: str,
    ) -> Claim | Record:
        """Claim in one call of the database's claim function (PostgreSQL, migration 0002)."""
        # Opted in, alone in autocommit, the claim commits without waiting for its WAL flush:
        # the view's transaction, committed synchronously afterwards, flushes it
        # (docs/design-choice.md, "The claim's commit").
        flush = self.flush_claims or connection.in_atomic_block or not connection.get_autocommit()
        row = postgresql.claim(
            connection, [scope, key, fingerprint, token, kind, name, lease, flush]
        )
        now, claimed, *record = row
        if claimed is None:
            raise StorageUnavailable(_CONTENDED)
        if not claimed:
            return _to_record(scope, key, record)
        store_now = to_datetime(now)
        # Since migration 0004 a takeover's row names the record it replaced.
        _pk, state, _fingerprint, _token, expired_at, *_response = record
        replaced = None if state is None else _replaced(state, expired_at, store_now)
        return Claim(
            scope,
            key,
            fingerprint,
            token,
            store_now + lease,
            claimed_at=store_now,
            replaced=replaced,
        )

    def complete(
        self, claim: Claim, response: StoredResponse, *, ttl: timedelta, replayable: bool = True
    ) -> None:
        connection = connections[self.using]
        sql = statements(connection)
        # The store's time, told from the claim's reading of it; the fence itself compares
        # with the database's clock in SQL.
        now = claim.store_now() or self.clock()
        state = State.COMPLETED if replayable else State.NOT_REPLAYABLE
        params = [
            state.value,
            adapt_datetime(connection, now),
            adapt_datetime(connection, now + ttl),
            response.status,
            adapt_json(connection, [list(pair) for pair in response.headers]),
            response.body if replayable else b"",
            claim.scope,
            claim.key,
            claim.token,
        ]
        if sql.functions and self._ends_transaction(connection):
            postgresql.complete_and_commit(connection, params, key=claim.key)
            return
        try:
            if sql.functions:
                completed = postgresql.complete(connection, params)
            else:
                fence = [State.IN_FLIGHT.value, *sql.now_params(connection, self.clock)]
                completed = bool(execute(connection, sql.complete, [*params, *fence]))
        except DatabaseError as exc:
            raise StorageUnavailable(_UNAVAILABLE) from exc
        if not completed:
            raise OwnershipLost("the claim ended before the view finished")

    def _ends_transaction(self, connection: BaseDatabaseWrapper) -> bool:
        """Whether a completion now is the last statement of this storage's own transaction.

        Inside ``atomic()``'s outermost block, with no block of anyone else's open, the engine
        commits right after completing (DESIGN §5): the two can share a round trip.
        """
        block = getattr(connection, _OWN_BLOCK, None)
        return (
            block is not None
            and connection.atomic_blocks == [block]
            and not connection.needs_rollback
            and postgresql.can_commit_with_completion(connection)
        )

    def release(self, claim: Claim) -> bool:
        connection = connections[self.using]
        params = [claim.scope, claim.key, claim.token, State.IN_FLIGHT.value]
        try:
            return bool(execute(connection, statements(connection).release, params))
        except DatabaseError as exc:
            raise StorageUnavailable(_UNAVAILABLE) from exc

    def get(self, scope: str, key: str) -> Record | None:
        connection = connections[self.using]
        try:
            now, row = self._read(connection, statements(connection), scope, key)
        except DatabaseError as exc:
            raise StorageUnavailable(_UNAVAILABLE) from exc
        if row is None or to_datetime(row[4]) <= now:
            return None
        return _to_record(scope, key, row)

    def _read(
        self, connection: BaseDatabaseWrapper, sql: Statements, scope: str, key: str
    ) -> tuple[datetime, tuple[Any, ...] | None]:
        """Return the store's time and the record's row (``None`` if absent) in one query."""
        now, *row = fetch_one(connection, sql.select, [scope, key]) or (None,)
        store_now = self.clock() if now is None else to_datetime(now)
        return store_now, (tuple(row) if row and row[0] is not None else None)

    def census(self) -> Census:
        try:
            return IdempotencyKey.objects.using(self.using).census()
        except DatabaseError as exc:
            raise StorageUnavailable(_UNAVAILABLE) from exc

    def erase_scope(self, scope: str, *, batch_size: int = ERASE_BATCH_SIZE) -> Iterator[int]:
        # Ordered as the unique (scope, key) index is, so each batch reads that index only.
        # A row a request holds locked is waited for, not skipped: an erasure leaves none.
        records = IdempotencyKey.objects.using(self.using).of_scope(scope).order_by("key")
        while True:
            try:
                deleted = records.delete_batch(batch_size)
            except DatabaseError as exc:
                raise StorageUnavailable(_UNAVAILABLE) from exc
            if deleted is None:
                return
            yield deleted

    def count_scope(self, scope: str) -> Count:
        try:
            return IdempotencyKey.objects.using(self.using).of_scope(scope).bounded_count()
        except DatabaseError as exc:
            raise StorageUnavailable(_UNAVAILABLE) from exc

    def is_rollback_marked(self) -> bool:
        return transaction.get_rollback(using=self.using)

    @contextmanager
    def atomic(self) -> Iterator[None]:
        connection = connections[self.using]
        outermost = not connection.in_atomic_block
        with transaction.atomic(using=self.using):
            if not outermost:
                yield
                return
            # Marked as this storage's, so complete() may commit it (_ends_transaction).
            setattr(connection, _OWN_BLOCK, connection.atomic_blocks[-1])
            try:
                yield
            finally:
                setattr(connection, _OWN_BLOCK, None)


def _replaced(state: str, expired_at: Any, now: datetime) -> Replaced:
    return Replaced(State(state), max(timedelta(0), now - to_datetime(expired_at)))


def _to_record(scope: str, key: str, row: Sequence[Any]) -> Record:
    _pk, raw_state, fingerprint, token, expires_at, status, headers, body = row
    state = State(raw_state)
    response = None
    if state is not State.IN_FLIGHT and status is not None:
        pairs = json.loads(headers) if isinstance(headers, str | bytes) else headers
        response = StoredResponse(
            status=int(status),
            headers=tuple((str(name), str(value)) for name, value in pairs),
            body=bytes(body),
        )
    return Record(
        scope=scope,
        key=key,
        state=state,
        fingerprint=fingerprint,
        token=token,
        expires_at=to_datetime(expires_at),
        response=response,
    )
