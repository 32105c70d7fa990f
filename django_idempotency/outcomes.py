"""What became of a keyed request, told once: the outcome's signal and its log line.

The engine calls ``report()`` at each outcome; receivers of the signals (the metrics of
``django_idempotency.metrics``, a project's own) and the ``django_idempotency.outcomes``
logger hear the same thing. A log line names the request's method and view, a hash of the key
and the kind of its scope; never the key in clear, the scope's principal, a body or a header
(docs/observability.md).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.dispatch import Signal
from django.http import HttpRequest

from django_idempotency import signals
from django_idempotency.exceptions import (
    IdempotencyError,
    IdempotencyFingerprintUnknown,
    IdempotencyKeyInProgress,
    IdempotencyKeyMismatch,
    IdempotencyKeyNotReplayable,
    IdempotencyLeaseExpired,
    IdempotencyReplayNotAcceptable,
    IdempotencyResponseUnreadable,
    IdempotencyStoreUnavailable,
)
from django_idempotency.policy import Policy
from django_idempotency.storage.base import Claim

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    CLAIMED = "claimed"
    TAKEN_OVER = "taken_over"
    EXPIRED = "expired"
    COMPLETED = "completed"
    REPLAYED = "replayed"
    MISMATCH = "mismatch"
    IN_PROGRESS = "in_progress"
    LEASE_EXPIRED = "lease_expired"
    RELEASED = "released"
    NOT_REPLAYABLE = "not_replayable"
    REPLAY_NOT_ACCEPTABLE = "replay_not_acceptable"
    RESPONSE_UNREADABLE = "response_unreadable"
    STORE_UNAVAILABLE = "store_unavailable"
    FAILED_OPEN = "failed_open"


@dataclass(frozen=True)
class _Telling:
    signal: Signal
    level: int
    says: str


#: Each outcome's signal, log level and what its log line says.
TELLINGS: dict[Outcome, _Telling] = {
    Outcome.CLAIMED: _Telling(signals.idempotency_claimed, logging.DEBUG, "claimed; the view runs"),
    Outcome.TAKEN_OVER: _Telling(
        signals.idempotency_taken_over,
        logging.WARNING,
        "took over a key whose request never finished within its lease; the view runs again",
    ),
    Outcome.EXPIRED: _Telling(
        signals.idempotency_expired,
        logging.INFO,
        "retried after its stored response expired (IDEMPOTENCY_TTL); the view runs again",
    ),
    Outcome.COMPLETED: _Telling(
        signals.idempotency_completed, logging.DEBUG, "response stored; retries replay it"
    ),
    Outcome.REPLAYED: _Telling(
        signals.idempotency_replayed, logging.DEBUG, "replayed the stored response"
    ),
    Outcome.MISMATCH: _Telling(
        signals.idempotency_mismatch, logging.INFO, "refused: the key was used for another request"
    ),
    Outcome.IN_PROGRESS: _Telling(
        signals.idempotency_in_progress, logging.INFO, "refused: the key's request still runs"
    ),
    Outcome.LEASE_EXPIRED: _Telling(
        signals.idempotency_lease_expired,
        logging.WARNING,
        "finished after its lease ended; another request had taken the key",
    ),
    Outcome.RELEASED: _Telling(
        signals.idempotency_released, logging.DEBUG, "released; nothing stored, a retry runs"
    ),
    Outcome.NOT_REPLAYABLE: _Telling(
        signals.idempotency_not_replayable,
        logging.INFO,
        "refused: the key's response could not be stored",
    ),
    Outcome.REPLAY_NOT_ACCEPTABLE: _Telling(
        signals.idempotency_replay_not_acceptable,
        logging.INFO,
        "refused: the stored response's coding is not acceptable to the retry",
    ),
    Outcome.RESPONSE_UNREADABLE: _Telling(
        signals.idempotency_response_unreadable,
        logging.ERROR,
        "refused: the stored response cannot be decrypted (keep each key in "
        "IDEMPOTENCY_ENCRYPTION_KEYS until IDEMPOTENCY_TTL after it last sealed)",
    ),
    Outcome.STORE_UNAVAILABLE: _Telling(
        signals.idempotency_store_unavailable,
        logging.WARNING,
        "refused: the idempotency store did not answer (fail-closed)",
    ),
    Outcome.FAILED_OPEN: _Telling(
        signals.idempotency_failed_open,
        logging.WARNING,
        "the idempotency store did not answer; the view runs unprotected (fail-open)",
    ),
}

#: The outcome each error the engine answers with stands for.
ERROR_OUTCOMES: dict[type[IdempotencyError], Outcome] = {
    IdempotencyKeyMismatch: Outcome.MISMATCH,
    IdempotencyFingerprintUnknown: Outcome.MISMATCH,
    IdempotencyKeyInProgress: Outcome.IN_PROGRESS,
    IdempotencyLeaseExpired: Outcome.LEASE_EXPIRED,
    IdempotencyKeyNotReplayable: Outcome.NOT_REPLAYABLE,
    IdempotencyResponseUnreadable: Outcome.RESPONSE_UNREADABLE,
    IdempotencyReplayNotAcceptable: Outcome.REPLAY_NOT_ACCEPTABLE,
    IdempotencyStoreUnavailable: Outcome.STORE_UNAVAILABLE,
}

#: What a function call's log line says instead, where a request's speaks of its view.
_CALL_SAYS: dict[Outcome, str] = {
    Outcome.CLAIMED: "claimed; the function runs",
    Outcome.TAKEN_OVER: (
        "took over a key whose call never finished within its lease (its worker died?); "
        "the function runs again"
    ),
    Outcome.EXPIRED: "called after its stored result expired (its ttl); the function runs again",
    Outcome.COMPLETED: "result stored; later calls return it",
    Outcome.REPLAYED: "returned the stored result",
    Outcome.MISMATCH: "refused: the key was used with other arguments",
    Outcome.IN_PROGRESS: "refused: the key's first call still runs",
    Outcome.LEASE_EXPIRED: "finished after its lease ended; its result was not stored",
    Outcome.RELEASED: "released; nothing stored, a retry runs",
    Outcome.NOT_REPLAYABLE: "refused: the key's first call ran, but its result was not stored",
    Outcome.RESPONSE_UNREADABLE: "refused: the stored result cannot be decrypted",
    Outcome.STORE_UNAVAILABLE: "refused: the idempotency store did not answer",
}

#: The scope kinds a log line may name; a custom scope function's scopes are "custom".
_SCOPE_KINDS = frozenset({"user", "credentials", "session", "anonymous"})


@dataclass(frozen=True)
class Subject:
    """The keyed request an outcome is about."""

    request: HttpRequest
    key: str
    scope: str


@dataclass(frozen=True)
class CallSubject:
    """The function call an outcome is about: no request; the method ``CALL``, its name."""

    key: str
    scope: str
    #: The function's dotted name, in the place of a view name.
    view: str
    method: str = "CALL"
    request: None = None


def report(
    outcome: Outcome,
    subject: Subject | CallSubject,
    operation: str | None = None,
    started: float | None = None,
    *,
    status: int | None = None,
    error: BaseException | None = None,
    level: int | None = None,
    says: str | None = None,
    expired_for: timedelta | None = None,
) -> None:
    """Send the outcome's signal and log its line (``level`` and ``says`` override the table's).

    ``operation`` is the store call the outcome came from, begun at ``started``
    (``time.perf_counter()``).
    """
    store_seconds = None if started is None else time.perf_counter() - started
    telling = TELLINGS[outcome]
    level = telling.level if level is None else level
    # Not has_listeners(), which resolves the receivers on every call: one list is cheaper.
    has_receivers = bool(telling.signal.receivers)
    if not has_receivers and not logger.isEnabledFor(level):
        return
    request = subject.request
    if isinstance(subject, CallSubject):
        method, view = subject.method, subject.view
        says = says or _CALL_SAYS.get(outcome)
    else:
        method, view = (subject.request.method or "").upper(), view_name(subject.request)
    if has_receivers:
        telling.signal.send(
            sender=Policy,
            request=request,
            key=subject.key,
            scope=subject.scope,
            outcome=outcome,
            method=method,
            view=view,
            operation=operation,
            store_seconds=store_seconds,
            status=status,
            error=error,
            expired_for=expired_for,
        )
    if logger.isEnabledFor(level):
        fields: dict[str, Any] = {
            "outcome": outcome.value,
            "method": method,
            "view": view or (request.path if request is not None else ""),
            "key_hash": key_hash(subject.key),
            "scope_kind": scope_kind(subject.scope),
            "status": status,
        }
        if expired_for is not None:
            fields["expired_for_seconds"] = round(expired_for.total_seconds(), 3)
            says = f"{says or telling.says} ({expired_for.total_seconds():.0f}s after it expired)"
        logger.log(
            level,
            "Idempotency %s: %s %s (key sha256:%s, %s scope)%s: %s.",
            outcome.value,
            method,
            fields["view"],
            fields["key_hash"],
            fields["scope_kind"],
            "" if status is None else f", status {status}",
            says or telling.says,
            exc_info=error if error is not None and level >= logging.WARNING else None,
            extra={"idempotency": fields},
        )


def report_claim(claim: Claim, subject: Subject | CallSubject, started: float) -> None:
    """Report a claim: a first run, or a run that took over a dead or expired record.

    Still a claim either way, so the view or function runs; what it took over is what
    operators watch.
    """
    replaced = claim.replaced
    if replaced is None:
        report(Outcome.CLAIMED, subject, "claim", started)
        return
    outcome = Outcome.TAKEN_OVER if replaced.is_in_flight else Outcome.EXPIRED
    report(outcome, subject, "claim", started, expired_for=replaced.expired_for)


def report_error(
    error: IdempotencyError, subject: Subject, operation: str, started: float | None = None
) -> None:
    """Report the outcome an error the engine answers with stands for."""
    report(
        ERROR_OUTCOMES[type(error)],
        subject,
        operation,
        started,
        status=error.status_code,
        error=error.__cause__ or error,
    )


def view_name(request: HttpRequest) -> str:
    """Return the view name of the request's URL pattern: a bounded label, never its path."""
    match = getattr(request, "resolver_match", None)
    return str(match.view_name) if match is not None else ""


def key_hash(key: str) -> str:
    """Return the first 16 hex digits of the key's SHA-256: enough to find it, not to use it."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def scope_kind(scope: str) -> str:
    """Return what kind of principal the scope is for (``user``, ``session``...), not whose."""
    kind = scope.split(":", 1)[0]
    return kind if kind in _SCOPE_KINDS else "custom"
