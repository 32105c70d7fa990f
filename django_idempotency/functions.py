"""Idempotent functions: a call with a key runs once; a later call returns its stored result.

The same storages, leases and fencing as requests (docs/functions.md). With a transactional
storage (``DatabaseStorage``) the function's own database writes and its stored result commit
together, and an exception rolls both back and frees the key; with ``CacheStorage`` the result
is stored after the function returns, the weaker promise of docs/storage-cache.md.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.utils import timezone

from django_idempotency.call_keys import CallArguments
from django_idempotency.calls import Call
from django_idempotency.encryption import Unreadable
from django_idempotency.options import to_timedelta
from django_idempotency.outcomes import Outcome
from django_idempotency.policy import is_disabled

# JSONSerializer and Serializer are importable from here too, where they were first.
from django_idempotency.results import JSONSerializer as JSONSerializer
from django_idempotency.results import Serializer as Serializer
from django_idempotency.storage.base import Claim, OwnershipLost, Record, State, Storage

P = ParamSpec("P")
R = TypeVar("R")

_POLL_SECONDS = 0.05
_LEASE_ENDED = "the call outlived its lease; another call may run it"
_IN_TRANSACTION = (
    "called inside a transaction on the storage's database, so its claim could not commit "
    "first: call it outside atomic() and ATOMIC_REQUESTS (@transaction.non_atomic_requests), "
    "or give it a storage on another database alias"
)


class IdempotentCallError(Exception):
    """Base class of the errors an idempotent call raises instead of running."""


class CallInProgress(IdempotentCallError):
    """Another call with this key still runs (and ``wait_timeout`` passed, if waiting).

    ``retry_after`` is how long until that call's lease ends, on this machine's clock: a
    retry after it finds the result, or takes the key over from a caller that died.
    """

    def __init__(self, message: str, *, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CallMismatch(IdempotentCallError):
    """The key was used before with other arguments."""


class CallNotStored(IdempotentCallError):
    """The key's first call ran, but its result could not be stored: it is not run again."""


class CallResultUnreadable(IdempotentCallError):
    """The key's stored result is sealed and cannot be opened: it is not run again.

    The encryption keys it was sealed with are gone from ``IDEMPOTENCY_ENCRYPTION_KEYS``
    (docs/data-protection.md); the record stays until its TTL ends.
    """


class CallLeaseExpired(IdempotentCallError):
    """The call ran past its lease, so its result was not stored (``lease`` too short)."""


class CallInTransaction(IdempotentCallError):
    """Called inside a transaction on the storage's database: its claim could not commit first.

    A concurrent duplicate would wait on the row the claim wrote instead of learning that the
    call is in progress, and the claim would roll back with the caller's transaction. Call it
    outside ``atomic()`` (and outside ``ATOMIC_REQUESTS`` views), or use a storage on another
    database alias (docs/functions.md, "Inside a transaction").
    """


def idempotent_function(
    *,
    key: str | Callable[..., Any],
    scope: str | None = None,
    ttl: timedelta | float | None = None,
    lease: timedelta | float | None = None,
    storage: str | Storage | None = None,
    wait_timeout: timedelta | float | None = None,
    serializer: Serializer | None = None,
    fingerprint: Callable[..., str] | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Make a function run once per key; later calls with the key return the stored result.

    ``key`` is the name of one of the function's arguments, or a callable taking the same
    arguments and returning the key. ``scope`` namespaces the keys (default: the function's
    dotted name). ``ttl``, ``lease`` and ``storage`` default to the settings. A call while
    the first still runs raises ``CallInProgress``, or waits up to ``wait_timeout`` for its
    result; a call with other arguments under the same key raises ``CallMismatch``.
    ``fingerprint`` (default: the arguments' canonical form) is a callable taking the same
    arguments and returning what tells a reuse of the key apart.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        arguments = CallArguments(function, key, scope=scope, fingerprint=fingerprint)

        def call_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Call:
            call_key, digest = arguments.key_and_fingerprint(args, kwargs)
            return Call.prepare(
                call_key, function, args, kwargs, scope, digest, ttl, lease, storage
            )

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                call = call_of(args, kwargs)
                return await _aonce(call, function, args, kwargs, wait_timeout, serializer)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            return _once(call_of(args, kwargs), function, args, kwargs, wait_timeout, serializer)

        return wrapper

    return decorate


def once(
    key: Any,
    function: Callable[..., R],
    *args: Any,
    scope: str | None = None,
    fingerprint: str | None = None,
    ttl: timedelta | float | None = None,
    lease: timedelta | float | None = None,
    storage: str | Storage | None = None,
    wait_timeout: timedelta | float | None = None,
    serializer: Serializer | None = None,
    **kwargs: Any,
) -> R:
    """Run ``function(*args, **kwargs)`` once for ``key``; return its result, stored or fresh.

    The call form of ``idempotent_function``, for code that computes its key at run time.
    ``fingerprint`` (default: the arguments, by parameter name) tells a reuse of the key apart.
    """
    return call_once(
        key,
        function,
        args,
        kwargs,
        scope=scope,
        fingerprint=fingerprint,
        ttl=ttl,
        lease=lease,
        storage=storage,
        wait_timeout=wait_timeout,
        serializer=serializer,
    )


def call_once(
    key: Any,
    function: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    scope: str | None = None,
    fingerprint: str | None = None,
    ttl: timedelta | float | None = None,
    lease: timedelta | float | None = None,
    storage: str | Storage | None = None,
    wait_timeout: timedelta | float | None = None,
    serializer: Serializer | None = None,
) -> R:
    """``once`` with the arguments as a tuple and a dict, so none can clash with an option."""
    call = Call.prepare(key, function, args, kwargs, scope, fingerprint, ttl, lease, storage)
    return _once(call, function, args, kwargs, wait_timeout, serializer)


def _once(
    call: Call,
    function: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_timeout: timedelta | float | None,
    serializer: Serializer | None,
) -> R:
    if is_disabled():  # IDEMPOTENCY_DISABLED: every call runs, as without the decorator
        return function(*args, **kwargs)
    if call.is_inside_a_transaction():
        raise CallInTransaction(_IN_TRANSACTION)
    codec = serializer or JSONSerializer()
    deadline = _deadline(wait_timeout)
    while True:
        found = call.claim()
        if isinstance(found, Claim):
            return _run(call, found, function, args, kwargs, codec)
        result = _answer(call, found, codec)
        if result is not _RUNNING:
            return result  # type: ignore[no-any-return]
        time.sleep(_pause(call, found, deadline))


async def aonce(
    key: Any,
    function: Callable[..., Awaitable[R]],
    *args: Any,
    scope: str | None = None,
    fingerprint: str | None = None,
    ttl: timedelta | float | None = None,
    lease: timedelta | float | None = None,
    storage: str | Storage | None = None,
    wait_timeout: timedelta | float | None = None,
    serializer: Serializer | None = None,
    **kwargs: Any,
) -> R:
    """``once`` for a coroutine function: the same claim, result and errors.

    The storage's calls run in a thread (``sync_to_async``). A coroutine cannot share a
    transaction with the store, so its result is stored after it returns, as with
    ``CacheStorage``: a result that cannot be stored keeps the key in flight until its lease
    ends (docs/functions.md, "Async functions").
    """
    call = Call.prepare(key, function, args, kwargs, scope, fingerprint, ttl, lease, storage)
    return await _aonce(call, function, args, kwargs, wait_timeout, serializer)


async def _aonce(
    call: Call,
    function: Callable[..., Awaitable[R]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_timeout: timedelta | float | None,
    serializer: Serializer | None,
) -> R:
    if is_disabled():
        return await function(*args, **kwargs)
    if await sync_to_async(call.is_inside_a_transaction)():
        raise CallInTransaction(_IN_TRANSACTION)
    codec = serializer or JSONSerializer()
    deadline = _deadline(wait_timeout)
    while True:
        found = await sync_to_async(call.claim)()
        if isinstance(found, Claim):
            ran = False
            try:
                result = await function(*args, **kwargs)
                ran = True
                body = codec.dumps(result)
                returned = codec.loads(body)  # what later calls get: stored only if it loads
                await sync_to_async(call.complete)(found, body)
            except OwnershipLost as exc:
                raise CallLeaseExpired(_LEASE_ENDED) from exc
            except BaseException:
                if not ran:
                    await sync_to_async(call.release_quietly)(found)
                raise
            return returned  # type: ignore[no-any-return]
        answer = _answer(call, found, codec)
        if answer is not _RUNNING:
            return answer  # type: ignore[no-any-return]
        await asyncio.sleep(_pause(call, found, deadline))


def _pause(call: Call, running: Record, deadline: float) -> float:
    """Return how long to wait before looking at a running call again; past ``deadline``, raise."""
    left = deadline - time.monotonic()
    if left <= 0:
        # Until its lease ends, as far as this clock tells; never past a whole lease.
        lease_left = min(max(running.expires_at - timezone.now(), timedelta(0)), call.lease)
        call.report(Outcome.IN_PROGRESS, "claim")
        raise CallInProgress(f"a call with key {call.key!r} still runs", retry_after=lease_left)
    return min(_POLL_SECONDS, left)


def _deadline(wait_timeout: timedelta | float | None) -> float:
    waits = to_timedelta(wait_timeout).total_seconds() if wait_timeout is not None else 0.0
    return time.monotonic() + waits


_RUNNING = object()


def _answer(call: Call, record: Record, codec: Serializer) -> Any:
    if record.fingerprint != call.digest:
        call.report(Outcome.MISMATCH, "claim")
        raise CallMismatch("this key was used before with other arguments")
    if record.state is State.NOT_REPLAYABLE:
        call.report(Outcome.NOT_REPLAYABLE, "claim")
        raise CallNotStored("the key's first call ran, but its result was not stored")
    if record.state is State.COMPLETED and record.response is not None:
        try:
            body = call.stored_result(record)
        except Unreadable as exc:
            call.report(Outcome.RESPONSE_UNREADABLE, "claim", error=exc)
            raise CallResultUnreadable("its stored result is sealed and cannot be opened") from exc
        call.report(Outcome.REPLAYED, "claim")
        return codec.loads(body)
    return _RUNNING


def _run(
    call: Call,
    claim: Claim,
    function: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    codec: Serializer,
) -> R:
    ran = False
    try:
        with call.store.atomic():
            result = function(*args, **kwargs)
            ran = True
            body = codec.dumps(result)
            # What every later call returns, so the first returns it too: one type for all
            # callers. Loaded before it is stored: a result that cannot load is not stored.
            returned = codec.loads(body)
            call.complete(claim, body)
    except OwnershipLost as exc:
        # Its lease ended first: with a transactional storage its writes rolled back.
        raise CallLeaseExpired(_LEASE_ENDED) from exc
    except BaseException:
        # The function raised, or it ran and its writes rolled back with the transaction:
        # nothing happened, so the key is freed and a retry runs it. Outside a transaction
        # a call that ran keeps its key in flight until the lease ends: its effects stand.
        if not ran or call.store.is_transactional:
            call.release_quietly(claim)
        raise
    return returned  # type: ignore[no-any-return]
