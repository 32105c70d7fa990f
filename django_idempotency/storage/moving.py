"""A storage that moves records from one storage to another without a window (docs/deploys.md).

``MovingStorage`` claims every key in both its ``old`` and its ``new`` storage, so it excludes
instances still running on the old storage alone (they claim there) and instances already
running on the new one alone (they claim there), and completes in both, so that once it has
run everywhere for one ``IDEMPOTENCY_TTL`` the new storage holds every live record. The move
is then three deploys: the mover, a wait of one TTL, the new storage alone.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from django_idempotency.storage.base import (
    ERASE_BATCH_SIZE,
    Census,
    Claim,
    Count,
    Origin,
    Record,
    Storage,
    StoredResponse,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MovingClaim(Claim):
    """A claim held in both storages: the old one's fields, and each storage's own claim."""

    in_old: Claim | None = None
    in_new: Claim | None = None


class MovingStorage(Storage):
    """Claim and complete in ``old`` and ``new`` alike; the old storage answers first.

    Subclass it naming both, by dotted path or instance, and point ``IDEMPOTENCY_STORAGE`` at
    the subclass::

        class ToRedis(MovingStorage):
            old = "django_idempotency.storage.DatabaseStorage"
            new = "django_idempotency.storage.CacheStorage"

    Where one of the two is transactional (``DatabaseStorage``), the view's writes and that
    storage's completion commit together, and the other storage completes once they have
    committed: a completion is never stored for writes that rolled back.
    """

    old: str | Storage = ""
    new: str | Storage = ""

    def __init__(self, old: str | Storage | None = None, new: str | Storage | None = None) -> None:
        from django_idempotency.storage.registry import get_storage

        source = f"{type(self).__name__}.old/new"
        if not (old or self.old) or not (new or self.new):
            raise ImproperlyConfigured(
                f"{source}: a MovingStorage needs both storages; subclass it naming them."
            )
        self.old_storage = get_storage(old or self.old, source=source)
        self.new_storage = get_storage(new or self.new, source=source)
        if self.old_storage is self.new_storage:
            raise ImproperlyConfigured(f"{source}: old and new are the same storage.")
        transactional = [s for s in (self.old_storage, self.new_storage) if s.is_transactional]
        #: The storage whose completion commits with the view's writes, if either can.
        self.transactional = transactional[0] if transactional else None
        self.is_transactional = self.transactional is not None
        self.max_scope_length = min(
            self.old_storage.max_scope_length, self.new_storage.max_scope_length
        )
        self.max_fingerprint_length = min(
            self.old_storage.max_fingerprint_length, self.new_storage.max_fingerprint_length
        )

    @property
    def using(self) -> str | None:
        return self.transactional.using if self.transactional is not None else None

    def claim(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        lease: timedelta,
        origin: Origin = Origin(),
    ) -> Claim | Record:
        in_old = self.old_storage.claim(scope, key, fingerprint, lease=lease, origin=origin)
        if isinstance(in_old, Record):
            return in_old  # live in the old storage: a legacy record, or an old instance's
        try:
            in_new = self.new_storage.claim(scope, key, fingerprint, lease=lease, origin=origin)
        except BaseException:
            # Unavailable, or misconfigured: the key must not stay claimed in the old one.
            self._release_quietly(self.old_storage, in_old)
            raise
        if isinstance(in_new, Record):
            # Live in the new storage only: an instance already on it made it.
            self._release_quietly(self.old_storage, in_old)
            return in_new
        return MovingClaim(
            scope=in_old.scope,
            key=in_old.key,
            fingerprint=in_old.fingerprint,
            token=in_old.token,
            expires_at=in_old.expires_at,
            claimed_at=in_old.claimed_at,
            claimed_monotonic=in_old.claimed_monotonic,
            replaced=in_old.replaced or in_new.replaced,
            in_old=in_old,
            in_new=in_new,
        )

    def complete(
        self, claim: Claim, response: StoredResponse, *, ttl: timedelta, replayable: bool = True
    ) -> None:
        # The transactional storage first (else the old one): the others follow once it
        # has stored the response, and after the view's writes committed where they share
        # its transaction. A completion is never stored for writes that rolled back.
        (first, first_claim), (later, later_claim) = self._ordered(claim)

        def complete_later() -> None:
            try:
                later.complete(later_claim, response, ttl=ttl, replayable=replayable)
            except Exception:
                # The response stands in the first storage; the other keeps its claim in
                # flight until its lease ends (docs/deploys.md, "Moving between storages").
                logger.warning(
                    "MovingStorage: %s did not take a completion that %s stored; its record "
                    "stays in flight until its lease ends.",
                    type(later).__name__,
                    type(first).__name__,
                    exc_info=True,
                )

        if self.transactional is None or not transaction.get_connection(self.using).in_atomic_block:
            # No transaction to wait for (IDEMPOTENCY_ATOMIC = False, say): on_commit would
            # run the later completion at once, before the first.
            first.complete(first_claim, response, ttl=ttl, replayable=replayable)
            complete_later()
            return
        # Registered first: if the completion below raises, the transaction rolls back and
        # takes the callback with it.
        transaction.on_commit(complete_later, using=self.using)
        first.complete(first_claim, response, ttl=ttl, replayable=replayable)

    def release(self, claim: Claim) -> bool:
        """Free the key in the first storage, and in the other only if the first freed it.

        The engine also releases after a completion whose outcome is unknown (a ``COMMIT``
        whose reply was lost): a release then finds the record completed and leaves it. The
        other storage's claim must then stay in flight too, or an instance on it alone would
        run the key again.
        """
        (first, first_claim), (other, other_claim) = self._ordered(claim)
        if not first.release(first_claim):
            return False
        return other.release(other_claim)

    def get(self, scope: str, key: str) -> Record | None:
        return self.old_storage.get(scope, key) or self.new_storage.get(scope, key)

    def census(self) -> Census | None:
        """The new storage's census: where the records are going."""
        return self.new_storage.census()

    def erase_scope(self, scope: str, *, batch_size: int = ERASE_BATCH_SIZE) -> Iterator[int]:
        yield from self.old_storage.erase_scope(scope, batch_size=batch_size)
        yield from self.new_storage.erase_scope(scope, batch_size=batch_size)

    def count_scope(self, scope: str) -> Count:
        old, new = self.old_storage.count_scope(scope), self.new_storage.count_scope(scope)
        if old.is_exact and new.is_exact:
            return Count(old.value + new.value)
        return Count(old.value + new.value, "at_least")

    def is_rollback_marked(self) -> bool:
        return self.transactional is not None and self.transactional.is_rollback_marked()

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        if self.transactional is None:
            yield
            return
        with self.transactional.atomic():
            yield

    def _ordered(self, claim: Claim) -> list[tuple[Storage, Claim]]:
        """Return both storages with their claims: the one that decides first.

        The transactional storage decides (its completion commits with the view's writes),
        else the old one.
        """
        if not isinstance(claim, MovingClaim) or claim.in_old is None or claim.in_new is None:
            raise TypeError(f"{type(self).__name__} was given a claim it did not make")
        both = [(self.old_storage, claim.in_old), (self.new_storage, claim.in_new)]
        if self.transactional is self.new_storage:
            both.reverse()
        return both

    @staticmethod
    def _release_quietly(storage: Storage, claim: Claim) -> None:
        # Best effort: a claim not released frees itself when its lease ends.
        with contextlib.suppress(Exception):
            storage.release(claim)
