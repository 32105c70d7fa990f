"""The storage interface: records and claims, fenced by a token, and nothing about HTTP."""

from __future__ import annotations

import abc
import contextlib
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal


class State(StrEnum):
    IN_FLIGHT = "in_flight"
    COMPLETED = "completed"
    NOT_REPLAYABLE = "not_replayable"


@dataclass(frozen=True)
class StoredResponse:
    """A response as stored: status, allow-listed headers and the exact body bytes."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


#: The ``Origin.kind`` of a function call's records (``functions.idempotent_function``).
CALL_KIND = "CALL"


@dataclass(frozen=True)
class Origin:
    """What claimed a key, kept for operators and never interpreted by a storage.

    For a request, ``kind`` is its HTTP method and ``name`` its path; for a function call,
    ``CALL_KIND`` and the function's dotted name. A storage keeps both as labels, shortened
    if it must, and never lets them decide or refuse a claim.
    """

    kind: str = ""
    name: str = ""


@dataclass(frozen=True)
class Record:
    """One stored (scope, key) as a storage reports it."""

    scope: str
    key: str
    state: State
    fingerprint: str
    token: str
    expires_at: datetime
    response: StoredResponse | None = None

    @property
    def is_in_flight(self) -> bool:
        return self.state is State.IN_FLIGHT


@dataclass(frozen=True)
class Replaced:
    """The dead record a claim took over: its state, and how long its expiry had passed.

    ``IN_FLIGHT``: its request never finished within its lease (it crashed, or still runs
    past it). Otherwise its response was stored and had expired: the client retried
    ``expired_for`` later than ``IDEMPOTENCY_TTL``. Measured on the store's clock.
    """

    state: State
    expired_for: timedelta

    @property
    def is_in_flight(self) -> bool:
        return self.state is State.IN_FLIGHT


@dataclass(frozen=True)
class Claim:
    """Proof that the caller owns (scope, key) until ``expires_at``, fenced by ``token``.

    ``expires_at`` and ``claimed_at`` are read on the store's clock; ``claimed_monotonic`` is
    the app's monotonic clock at the same moment, so ``store_now()`` can tell the store's time
    later without asking the store again or trusting the app server's wall clock.
    ``replaced`` is the dead record the claim took over, where the storage still knew it
    (``DatabaseStorage`` until the purge; ``CacheStorage`` only with tombstones).
    """

    scope: str
    key: str
    fingerprint: str
    token: str
    expires_at: datetime
    claimed_at: datetime | None = None
    claimed_monotonic: float = field(default_factory=time.monotonic, compare=False)
    replaced: Replaced | None = None

    def store_now(self) -> datetime | None:
        """Return the store's time now, as measured from the claim; ``None`` if not known."""
        if self.claimed_at is None:
            return None
        return self.claimed_at + timedelta(seconds=time.monotonic() - self.claimed_monotonic)


@dataclass(frozen=True)
class Count:
    """A number of records, and how it was found.

    ``exact`` was counted; ``estimate`` is the database planner's; ``at_least`` is a lower
    bound, where counting stopped at a limit or a bounded sample.
    """

    value: int
    kind: Literal["exact", "estimate", "at_least"] = "exact"

    @property
    def is_exact(self) -> bool:
        return self.kind == "exact"

    def __str__(self) -> str:
        """Say the count as it was found: "12", "at least 10000", "about 250000"."""
        return {"exact": "{}", "at_least": "at least {}", "estimate": "about {}"}[self.kind].format(
            self.value
        )


@dataclass(frozen=True)
class Census:
    """What a storage holds now, read without scanning it (docs/metrics.md, "The census").

    ``in_flight`` keys are running within their lease; ``lease_expired`` ones are still in
    flight past it (a crashed owner, or a view running longer than its lease): the next
    retry takes them over. ``expired`` records are finished and past their retention,
    waiting for the purge. ``oldest_in_flight`` is how long the oldest in-flight key
    (either kind) has run; ``oldest_expired`` how long ago the oldest expired record
    expired, which grows while the purge does not run. ``sampled`` is how many records a
    storage that can only sample looked at (``None`` when it counted or estimated).
    """

    in_flight: Count
    lease_expired: Count
    completed: Count
    not_replayable: Count
    expired: Count
    oldest_in_flight: timedelta | None = None
    oldest_expired: timedelta | None = None
    sampled: int | None = None

    def counts(self) -> dict[str, Count]:
        """Return the counts by category name, in a stable order."""
        return {
            "in_flight": self.in_flight,
            "lease_expired": self.lease_expired,
            "completed": self.completed,
            "not_replayable": self.not_replayable,
            "expired": self.expired,
        }


class StorageError(Exception):
    """Base class for storage failures."""


class StorageUnavailable(StorageError):
    """The store cannot say whether the caller owns the key (DESIGN §2.5: fail closed)."""


class OwnershipLost(StorageError):
    """The claim's token no longer matches: its lease ended or another request took over."""


#: How many records one batch of ``Storage.erase_scope`` deletes, at most.
ERASE_BATCH_SIZE = 500


def new_token() -> str:
    """Return a fresh fencing token."""
    return secrets.token_hex(16)


class Storage(abc.ABC):
    """Keep records of idempotency keys; every write after the claim is fenced by its token."""

    #: Whether ``atomic()`` couples the view's database writes with ``complete()``.
    is_transactional: bool = False
    #: The longest scope the storage keeps; the engine hashes longer ones.
    max_scope_length: int = 255
    #: The longest fingerprint the storage keeps: a version and a 64-character digest fit.
    max_fingerprint_length: int = 128

    @property
    def using(self) -> str | None:
        """The database alias whose transaction ``atomic()`` opens, if any."""
        return None

    @abc.abstractmethod
    def claim(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        lease: timedelta,
        origin: Origin = Origin(),
    ) -> Claim | Record:
        """Make the caller the owner of (scope, key), or return the live record that stops it.

        A record whose expiry has passed (a crashed owner's lease, or a response past its
        retention) is taken over with a new token, and ``origin`` is kept with the new claim,
        whose ``replaced`` says what was taken over; a live record is returned untouched.
        """

    @abc.abstractmethod
    def complete(
        self, claim: Claim, response: StoredResponse, *, ttl: timedelta, replayable: bool = True
    ) -> None:
        """Store the owner's response; raise ``OwnershipLost`` when the claim no longer holds."""

    @abc.abstractmethod
    def release(self, claim: Claim) -> bool:
        """Forget an in-flight claim so a retry runs again; return whether it was still held."""

    @abc.abstractmethod
    def get(self, scope: str, key: str) -> Record | None:
        """Return the live record for (scope, key), if any."""

    def census(self) -> Census | None:
        """Count the records by state and age, cheaply; ``None`` if this storage cannot.

        Never a scan of every record: a storage counts up to a limit, estimates, or
        samples, and says which in each ``Count``. Raises ``StorageUnavailable`` when
        the store does not answer.
        """
        return None

    def erase_scope(self, scope: str, *, batch_size: int = ERASE_BATCH_SIZE) -> Iterator[int]:
        """Delete every record of ``scope`` (one principal's keys), in every state, by batches.

        For an erasure request (docs/purge.md, "Erasing a principal's keys"). Yields how
        many records each batch deleted; nothing is deleted until it is iterated. Afterwards a
        retry of an erased completed key runs its view again, and a request still running on
        an erased key cannot store its response (``OwnershipLost``). Raises
        ``StorageUnavailable`` when the store does not answer, ``NotImplementedError`` when
        this storage cannot find a scope's records.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot erase a scope's records.")

    def count_scope(self, scope: str) -> Count:
        """Count the records of ``scope`` in every state, as ``erase_scope`` would find them."""
        raise NotImplementedError(f"{type(self).__name__} cannot count a scope's records.")

    def is_rollback_marked(self) -> bool:
        """Whether the open ``atomic()`` block is already doomed to roll back."""
        return False

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        """Wrap the view and ``complete()`` so they commit together, where the storage can."""
        yield
