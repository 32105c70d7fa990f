"""The engine: HTTP semantics of idempotency keys over any storage (DESIGN §3, §4)."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from django_idempotency.encryption import Unreadable
from django_idempotency.exceptions import (
    IdempotencyError,
    IdempotencyFingerprintUnknown,
    IdempotencyKeyInProgress,
    IdempotencyKeyInvalid,
    IdempotencyKeyMismatch,
    IdempotencyKeyMissing,
    IdempotencyKeyNotReplayable,
    IdempotencyKeyWithoutPrincipal,
    IdempotencyLeaseExpired,
    IdempotencyReplayNotAcceptable,
    IdempotencyRequestTooLarge,
    IdempotencyResponseUnreadable,
    IdempotencyStoreUnavailable,
)
from django_idempotency.fingerprints import bounded
from django_idempotency.held import Held
from django_idempotency.keys import parse_key
from django_idempotency.outcomes import Outcome, Subject, report, report_claim, report_error
from django_idempotency.policy import Policy
from django_idempotency.responses import (
    PROBLEM_CONTENT_TYPE,
    is_storable,
    problem_document,
    replay_response,
)
from django_idempotency.scopes import ANONYMOUS, resolve_anonymous
from django_idempotency.storage.base import (
    Claim,
    Origin,
    OwnershipLost,
    Record,
    State,
    StorageUnavailable,
    StoredResponse,
)

# How often a request in "wait" mode looks again at an in-flight key.
_WAIT_POLL_SECONDS = 0.05

#: The response stored for a request that raised, when the outcome is unknown (DESIGN §4).
#: An outcome, never raised, so no ``IdempotencyError`` class; docs/errors.md has its heading.
_UNKNOWN_OUTCOME = StoredResponse(
    status=500,
    headers=(("Content-Type", PROBLEM_CONTENT_TYPE),),
    body=problem_document(
        code="idempotency_outcome_unknown",
        title="Internal Server Error",
        status=500,
        detail="The original request failed with an unexpected error. It is not run again, "
        "because it may have had effects.",
    ),
)


def begin(request: HttpRequest, policy: Policy) -> Execution | HttpResponse | None:
    """Decide what to do with ``request`` before its view runs.

    Return ``None`` when the request is not covered (the view runs as usual), a response
    to send instead of running the view (a replay), or an ``Execution`` when this request
    owns the key and must run the view. Raise an ``IdempotencyError`` for every problem,
    naming the policy's header.
    """
    try:
        return _begin(request, policy)
    except IdempotencyError as error:
        raise error.naming(policy.header)  # noqa: B904  (the same error, re-raised)


def _begin(request: HttpRequest, policy: Policy) -> Execution | HttpResponse | None:
    if not policy.applies_to(request):
        return None
    method = (request.method or "").upper()
    raw_key = request.headers.get(policy.header)
    if raw_key is None:  # covered without a key: only when one is required
        raise IdempotencyKeyMissing
    key = parse_key(raw_key)
    scope = policy.scope(request)
    if scope == ANONYMOUS:
        scope = resolve_anonymous(request, policy.anonymous)
    scope = bounded(scope, policy.storage.max_scope_length)
    try:
        fingerprint = policy.fingerprint_of(request)
    except RequestDataTooBig as exc:
        raise IdempotencyRequestTooLarge from exc
    # For the operator who finds the record: what claimed it, in the storage's neutral terms.
    origin = Origin(kind=method, name=request.path)
    subject = Subject(request, key, scope)
    deadline = time.monotonic() + policy.wait_timeout.total_seconds()
    return _claim(policy, subject, fingerprint, origin, deadline)


def _claim(
    policy: Policy, subject: Subject, fingerprint: str, origin: Origin, deadline: float
) -> Execution | HttpResponse | None:
    request = subject.request
    while True:
        started = time.perf_counter()
        try:
            result = policy.storage.claim(
                subject.scope, subject.key, fingerprint, lease=policy.lease, origin=origin
            )
        except StorageUnavailable as exc:
            if policy.fail_open:
                report(Outcome.FAILED_OPEN, subject, "claim", started, error=exc)
                return None
            refusal = IdempotencyStoreUnavailable(retry_after=policy.retry_after)
            refusal.__cause__ = exc
            report_error(refusal, subject, "claim", started)
            raise refusal from exc
        if isinstance(result, Claim):
            report_claim(result, subject, started)
            return Execution(policy, result, subject)
        try:
            replay = _answer_existing(result, fingerprint, policy, request)
            if replay is None and (policy.on_conflict != "wait" or time.monotonic() >= deadline):
                raise IdempotencyKeyInProgress(retry_after=policy.retry_after)
        except IdempotencyError as error:
            # Reported with the store call it answers, timed like every other outcome.
            report_error(error, subject, "claim", started)
            raise
        if replay is not None:
            report(Outcome.REPLAYED, subject, "claim", started, status=replay.status_code)
            return replay
        time.sleep(min(_WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def possible_errors(policy: Policy) -> list[IdempotencyError]:
    """Return the errors ``begin()`` and an ``Execution`` may answer a request under ``policy``.

    What the OpenAPI schema documents for an operation; each error as it would be raised,
    with the policy's status, ``Retry-After`` and header.
    """
    kinds: list[type[IdempotencyError]] = []
    if policy.required:
        kinds.append(IdempotencyKeyMissing)
    kinds += [IdempotencyKeyInvalid, IdempotencyKeyInProgress, IdempotencyKeyNotReplayable]
    if policy.anonymous != "shared":
        kinds.append(IdempotencyKeyWithoutPrincipal)
    kinds += [IdempotencyKeyMismatch, IdempotencyFingerprintUnknown]
    # Any view may store a coded body (its own, or GZipMiddleware's inside the middleware).
    kinds.append(IdempotencyReplayNotAcceptable)
    if policy.encryptor is not None:
        # A body sealed by a key since dropped from the keys.
        kinds.append(IdempotencyResponseUnreadable)
    if policy.is_atomic:
        # Without a shared transaction an owner past its lease sends the view's response.
        kinds.append(IdempotencyLeaseExpired)
    if settings.DATA_UPLOAD_MAX_MEMORY_SIZE is not None:
        kinds.append(IdempotencyRequestTooLarge)
    if policy.is_atomic or not policy.fail_open:
        # Fail-open skips the claim when the store is down; a response the view's transaction
        # cannot store is still refused.
        kinds.append(IdempotencyStoreUnavailable)
    return [_error(kind, policy).naming(policy.header) for kind in kinds]


#: The errors raised with a ``Retry-After``: the same request may succeed later.
_RETRY_LATER: tuple[type[IdempotencyError], ...] = (
    IdempotencyKeyInProgress,
    IdempotencyLeaseExpired,
    IdempotencyResponseUnreadable,
    IdempotencyStoreUnavailable,
)


def _error(kind: type[IdempotencyError], policy: Policy) -> IdempotencyError:
    if kind in (IdempotencyKeyMismatch, IdempotencyFingerprintUnknown):
        return kind(status_code=policy.mismatch_status)
    if kind in _RETRY_LATER:
        return kind(retry_after=policy.retry_after)
    return kind()


def _answer_existing(
    record: Record, fingerprint: str, policy: Policy, request: HttpRequest
) -> HttpResponse | None:
    if record.fingerprint != fingerprint:
        same = policy.is_same_request(record.fingerprint, fingerprint, request)
        if same is None:  # made under a fingerprint this deploy cannot compute
            raise IdempotencyFingerprintUnknown(status_code=policy.mismatch_status)
        if not same:
            # IETF draft §2.7: the key was used for another request; in any state, 422.
            raise IdempotencyKeyMismatch(status_code=policy.mismatch_status)
    if record.state is State.NOT_REPLAYABLE:
        raise IdempotencyKeyNotReplayable
    if record.state is State.COMPLETED and record.response is not None:
        try:
            stored = policy.unsealed(record.response, scope=record.scope, key=record.key)
        except Unreadable as exc:
            raise IdempotencyResponseUnreadable(retry_after=policy.retry_after) from exc
        accept_encoding = request.headers.get("Accept-Encoding")
        return replay_response(stored, accept_encoding=accept_encoding)
    return None


#: Statuses the view answers without having done anything that must not happen twice: the
#: caller was refused (401, 403) or asked to come back (409, 429). Never stored (DESIGN §4),
#: so a refused caller can never leave its answer behind for the key.
_NOT_STORED_STATUSES = frozenset({401, 403, 409, 429})


# What the log says of a store that failed, or a lease that ended, once the view had run.
_LATE = "An idempotent request finished after its lease ended; its response was sent"
_UNSTORED = "Could not store the response of an idempotent request; the key frees at lease end"
_UNKEPT = "Could not store the failed outcome of an idempotent request; the key frees at lease end"
_UNRELEASED = "Could not release an idempotency key; it frees when its lease ends"


class Execution:
    """A request that owns its key: open the transaction, then store or release the outcome.

    Whatever happens between ``enter()`` and ``finish()`` or ``abort()``, the transaction is
    closed and the key is left in a correct state: stored, released when nothing happened, or
    kept in flight until its lease ends when the outcome is unknown.
    """

    def __init__(self, policy: Policy, claim: Claim, subject: Subject) -> None:
        self.policy = policy
        self.claim = claim
        self.subject = subject
        self._atomic: Held | None = None
        self._is_atomic = policy.is_atomic
        self._settled = False

    def enter(self) -> None:
        """Open the transaction that the view and the stored response share."""
        if not self._is_atomic:
            return
        try:
            self._atomic = Held(self.policy.storage.atomic())
        except Exception as exc:
            # The view has not run: free the key, and answer as for any store failure.
            self._settle(release=True)
            report(Outcome.STORE_UNAVAILABLE, self.subject, status=503, error=exc)
            raise IdempotencyStoreUnavailable(retry_after=self.policy.retry_after) from exc

    def finish(self, response: HttpResponseBase) -> HttpResponseBase:
        """Store or release according to the view's response, then close the transaction.

        Raise an ``IdempotencyError`` when the response cannot stand: the lease ended (the
        view's writes were rolled back) or the store failed inside the transaction. Any other
        exception (a response that fails to render, say) is raised after the transaction is
        rolled back and the key settled as for a view that raised.
        """
        try:
            return self._finish(response)
        except BaseException as error:
            self.abort()
            if isinstance(error, IdempotencyError):
                report_error(error, self.subject, "complete")
                error.naming(self.policy.header)
            raise

    def abort(self) -> None:
        """Roll back after the view raised; release the key, or keep its unknown outcome."""
        self._close(commit=False)
        if self._settled:
            return
        if self._is_atomic:
            # The view's writes were rolled back: nothing happened, a retry may run.
            self._settle(release=True)
            return
        # Without a shared transaction the view may have had effects (DESIGN §4).
        self._settle(release=False)
        if not self.policy.store_server_errors:
            return  # kept in flight: the lease, not a retry, ends it
        started = time.perf_counter()
        try:
            self.policy.storage.complete(self.claim, _UNKNOWN_OUTCOME, ttl=self.policy.ttl)
        except (OwnershipLost, StorageUnavailable) as exc:
            report(
                Outcome.STORE_UNAVAILABLE,
                self.subject,
                "complete",
                started,
                error=exc,
                says=_UNKEPT,
            )
        else:
            report(Outcome.COMPLETED, self.subject, "complete", started, status=500)

    def _finish(self, response: HttpResponseBase) -> HttpResponseBase:
        render = getattr(response, "render", None)
        if callable(render) and not getattr(response, "is_rendered", True):
            render()
        status = response.status_code
        if status in _NOT_STORED_STATUSES:
            self._close(commit=False)
            self._settle(release=True)
            return response
        if status >= 500 and (self._is_atomic or not self.policy.store_server_errors):
            # Inside the rolled-back transaction nothing happened; outside it the outcome is
            # unknown, and the operator chose not to store it: the key waits out its lease.
            self._close(commit=False)
            self._settle(release=self._is_atomic)
            return response
        replayable = is_storable(response, self.policy.max_response_size)
        stored = self._to_stored(response, replayable)
        if self._atomic is not None and self.policy.storage.is_rollback_marked():
            # The view's transaction is doomed (DRF marks it after a handled error under
            # ATOMIC_REQUESTS): nothing it wrote will stay. A deterministic error is still
            # the outcome; a success whose writes vanish is not, so the key is released.
            self._close(commit=False)
            if status < 400:
                self._settle(release=True)
                return response
        return self._complete(stored, replayable, response)

    def _to_stored(self, response: HttpResponseBase, replayable: bool) -> StoredResponse:
        if not replayable:
            return StoredResponse(status=response.status_code)
        assert isinstance(response, HttpResponse)
        headers = tuple(
            (name, value)
            for name, value in response.items()
            if self.policy.should_replay_header(name)
        )
        body = self.policy.sealed(response.content, scope=self.claim.scope, key=self.claim.key)
        return StoredResponse(status=response.status_code, headers=headers, body=body)

    def _complete(
        self, stored: StoredResponse, replayable: bool, response: HttpResponseBase
    ) -> HttpResponseBase:
        started = time.perf_counter()
        try:
            self.policy.storage.complete(
                self.claim, stored, ttl=self.policy.ttl, replayable=replayable
            )
        except OwnershipLost:
            self._close(commit=False)
            self._settled = True  # another request owns the key now
            if not self._is_atomic:
                # Without a shared transaction the view's effects are done; the client
                # still gets its response, but a retry after the takeover may run again.
                report(Outcome.LEASE_EXPIRED, self.subject, "complete", started, says=_LATE)
                return response
            raise IdempotencyLeaseExpired(retry_after=self.policy.retry_after) from None
        except StorageUnavailable as exc:
            if not self._is_atomic:
                # The view's effects are done but not recorded: the key stays in flight
                # until its lease ends, so no retry runs it again before then.
                self._settle(release=False)
                report(
                    Outcome.STORE_UNAVAILABLE,
                    self.subject,
                    "complete",
                    started,
                    error=exc,
                    level=logging.ERROR,
                    says=_UNSTORED,
                )
                return response
            self._close(commit=False)
            self._settle(release=True)
            raise IdempotencyStoreUnavailable(retry_after=self.policy.retry_after) from None
        # A commit that fails raises here; finish() then rolls back and releases the key,
        # since neither the view's writes nor the response were kept.
        self._close(commit=True)
        self._settled = True
        report(Outcome.COMPLETED, self.subject, "complete", started, status=stored.status)
        return response

    def _close(self, *, commit: bool) -> None:
        atomic, self._atomic = self._atomic, None
        if atomic is not None:
            atomic.close(commit=commit)

    def _settle(self, *, release: bool) -> None:
        if self._settled:
            return
        self._settled = True
        if not release:
            return
        started = time.perf_counter()
        try:
            self.policy.storage.release(self.claim)
        except StorageUnavailable:
            report(Outcome.STORE_UNAVAILABLE, self.subject, "release", started, says=_UNRELEASED)
            return
        report(Outcome.RELEASED, self.subject, "release", started)
