"""Celery tasks that run once per key, and retry while another delivery of the key still runs.

``idempotent_task`` is ``idempotent_function`` for a Celery task (docs/functions.md, "Celery
tasks"): a task redelivered after its worker died (``acks_late`` with
``task_reject_on_worker_lost``) meets the dead delivery's claim, and instead of failing or
running at once it retries (``task.retry``) when that claim's lease ends; then it takes the
key over and runs, or returns the result another delivery stored. Needs the ``celery`` extra.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from celery import Task, current_task

from django_idempotency.call_keys import CallArguments
from django_idempotency.conf import idempotency_settings
from django_idempotency.functions import CallInProgress, CallLeaseExpired, call_once
from django_idempotency.options import to_timedelta
from django_idempotency.results import Serializer
from django_idempotency.storage.base import Storage, StorageUnavailable

P = ParamSpec("P")
R = TypeVar("R")

#: The shortest countdown of a retry: a lease that just ended is looked at again soon.
MIN_RETRY_DELAY = timedelta(seconds=1)


def idempotent_task(
    *,
    key: str | Callable[..., Any],
    scope: str | None = None,
    ttl: timedelta | float | None = None,
    lease: timedelta | float | None = None,
    storage: str | Storage | None = None,
    serializer: Serializer | None = None,
    fingerprint: Callable[..., str] | None = None,
    retry_delay: timedelta | float | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Make a task's body run once per key; put it under ``@app.task``.

    ``key``, ``scope``, ``ttl``, ``lease``, ``storage``, ``serializer`` and ``fingerprint``
    are ``idempotent_function``'s. With ``bind=True`` the task itself, its first argument, is
    left out of the fingerprint (the key callable still receives it). While another
    delivery holds the key, the task retries after ``retry_delay`` (default: 1, 2, 4...
    seconds by its retries, never past that delivery's lease), within ``max_retries``;
    when the store does not answer, after ``retry_delay`` or ``IDEMPOTENCY_RETRY_AFTER``.
    """
    delay = to_timedelta(retry_delay) if retry_delay is not None else None

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        arguments = CallArguments(function, key, scope=scope, fingerprint=fingerprint)
        first = next(iter(arguments.signature.parameters), None)

        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = bool(args) and isinstance(args[0], Task)
            task: Task[Any, Any] = args[0] if bound else current_task  # type: ignore[assignment]
            without = frozenset({first}) if bound and first else frozenset()
            call_key, digest = arguments.key_and_fingerprint(args, kwargs, without=without)
            try:
                return call_once(
                    call_key,
                    function,
                    args,
                    kwargs,
                    scope=scope,
                    fingerprint=digest,
                    ttl=ttl,
                    lease=lease,
                    storage=storage,
                    serializer=serializer,
                )
            except CallInProgress as exc:
                countdown = delay if delay is not None else _backoff(task, exc.retry_after)
                raise task.retry(exc=exc, countdown=countdown.total_seconds()) from exc
            except CallLeaseExpired as exc:
                # It ran past its lease: its writes rolled back (DatabaseStorage), and another
                # delivery may hold the key now. A retry finds out which.
                raise task.retry(exc=exc, countdown=MIN_RETRY_DELAY.total_seconds()) from exc
            except StorageUnavailable as exc:
                # Nothing ran: the claim found no store. As a 503 says, come back later.
                countdown = delay if delay is not None else idempotency_settings.RETRY_AFTER
                raise task.retry(exc=exc, countdown=countdown.total_seconds()) from exc

        return run

    return decorate


def _backoff(task: Task[Any, Any], lease_left: timedelta) -> timedelta:
    """Return when to look again at a key another delivery holds: soon, then less often.

    1, 2, 4... seconds by the task's retries, so a duplicate of a fast task gets its result
    soon; never past the holder's lease, after which a dead holder's key is taken over.
    """
    retries: int = getattr(task.request, "retries", 0) or 0
    doubling: timedelta = MIN_RETRY_DELAY * (2 ** min(retries, 16))
    return max(MIN_RETRY_DELAY, min(doubling, lease_left))
