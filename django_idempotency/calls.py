"""One keyed function call: where its record is kept, the store calls, the outcomes they tell.

``functions`` decides what a call does; this module resolves it against the settings and
speaks to the storage, reporting each outcome as the engine does for requests (the same
signals, metrics and log lines), with the method ``CALL`` and the function's dotted name as
the view (docs/observability.md, "Function calls").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import connections

from django_idempotency.call_keys import (
    arguments_fingerprint,
    bound_arguments,
    dotted_name,
    refuse_a_shared_name,
)
from django_idempotency.conf import idempotency_settings
from django_idempotency.encryption import seal, unseal
from django_idempotency.fingerprints import bounded
from django_idempotency.keys import MAX_KEY_LENGTH
from django_idempotency.options import to_timedelta
from django_idempotency.outcomes import CallSubject, Outcome, report, report_claim
from django_idempotency.storage.base import (
    CALL_KIND,
    Claim,
    Origin,
    OwnershipLost,
    Record,
    Storage,
    StorageUnavailable,
    StoredResponse,
)
from django_idempotency.storage.registry import get_storage

#: The status and headers a stored result is kept under: the storages store responses.
_RESULT_STATUS = 200
_HEADERS = (("Content-Type", "application/json"),)


@dataclass(frozen=True)
class Call:
    """One keyed call, resolved against the settings: where and how its record is kept."""

    store: Storage
    scope: str
    key: str
    digest: str
    lease: timedelta
    ttl: timedelta
    origin: Origin

    @classmethod
    def prepare(
        cls,
        key: Any,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        scope: str | None,
        fingerprint: str | None,
        ttl: timedelta | float | None,
        lease: timedelta | float | None,
        storage: str | Storage | None,
    ) -> Call:
        if scope is None:
            refuse_a_shared_name(function)
        store = get_storage(storage or idempotency_settings.STORAGE, source="storage")
        digest = fingerprint or arguments_fingerprint(bound_arguments(function, args, kwargs))
        return cls(
            store=store,
            scope=bounded(f"function:{scope or dotted_name(function)}", store.max_scope_length),
            key=bounded(key_text(key), MAX_KEY_LENGTH),
            digest=bounded(digest, store.max_fingerprint_length),
            lease=to_timedelta(lease) if lease is not None else idempotency_settings.LEASE,
            ttl=to_timedelta(ttl) if ttl is not None else idempotency_settings.TTL,
            origin=Origin(kind=CALL_KIND, name=dotted_name(function)),
        )

    def is_inside_a_transaction(self) -> bool:
        """Say whether the caller holds a transaction on the (transactional) store's database.

        A TestCase's own transactions do not count (as for ``atomic(durable=True)``): the
        code under test runs outside any in production.
        """
        store = self.store
        if not (store.is_transactional and store.using):
            return False
        blocks = connections[store.using].atomic_blocks
        return any(not getattr(block, "_from_testcase", False) for block in blocks)

    def claim(self) -> Claim | Record:
        """Claim the key, or return its record; report a claim (a run) as it happened."""
        started = time.perf_counter()
        try:
            found = self.store.claim(
                self.scope, self.key, self.digest, lease=self.lease, origin=self.origin
            )
        except StorageUnavailable as exc:
            self.report(Outcome.STORE_UNAVAILABLE, "claim", started, error=exc)
            raise
        if isinstance(found, Claim):
            report_claim(found, self.subject, started)
        return found

    def complete(self, claim: Claim, body: bytes) -> None:
        """Store the result's bytes, sealed when an encryptor is set (as response bodies are)."""
        started = time.perf_counter()
        sealed = seal(body, idempotency_settings.ENCRYPTOR, scope=self.scope, key=self.key)
        try:
            self.store.complete(
                claim, StoredResponse(_RESULT_STATUS, _HEADERS, sealed), ttl=self.ttl
            )
        except OwnershipLost as exc:
            self.report(Outcome.LEASE_EXPIRED, "complete", started, error=exc)
            raise
        except StorageUnavailable as exc:
            self.report(Outcome.STORE_UNAVAILABLE, "complete", started, error=exc)
            raise
        self.report(Outcome.COMPLETED, "complete", started)

    def stored_result(self, record: Record) -> bytes:
        """Return a completed record's result bytes, opened; ``Unreadable`` if they cannot be."""
        assert record.response is not None
        return unseal(
            record.response.body, idempotency_settings.ENCRYPTOR, scope=self.scope, key=self.key
        )

    def release_quietly(self, claim: Claim) -> None:
        # Best effort: a claim not released frees itself when its lease ends.
        started = time.perf_counter()
        with contextlib.suppress(StorageUnavailable):
            self.store.release(claim)
            self.report(Outcome.RELEASED, "release", started)

    def report(
        self,
        outcome: Outcome,
        operation: str | None = None,
        started: float | None = None,
        **details: Any,
    ) -> None:
        """Tell the outcome as the engine tells a request's: signal, metrics, log line."""
        report(outcome, self.subject, operation, started, **details)

    @property
    def subject(self) -> CallSubject:
        """What this call's outcomes are about, for the outcome reports."""
        return CallSubject(self.key, self.scope, view=self.origin.name, method=CALL_KIND)


def key_text(key: Any) -> str:
    """Return a call's key as text; ``ValueError`` for no key (``None`` or empty)."""
    text = "" if key is None else str(key)
    if not text:
        raise ValueError(f"an idempotent call needs a key, not {key!r}")
    return text
