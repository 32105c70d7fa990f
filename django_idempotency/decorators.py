"""``@idempotent(...)`` and ``@idempotency_exempt``: mark a plain view for the middleware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from django_idempotency.handling import (  # noqa: F401  (kept importable from here)
    EXEMPT_ATTRIBUTE,
    HANDLED_BY_VIEW_ATTRIBUTE,
    OPTIONS_ATTRIBUTE,
    get_view_options,
    is_drf_view,
    is_exempt,
    is_handled_by_middleware,
)
from django_idempotency.validation import validate_options

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


@overload
def idempotent(view: ViewT, /) -> ViewT: ...
@overload
def idempotent(view: None = None, /, **options: Any) -> Callable[[ViewT], ViewT]: ...
def idempotent(view: ViewT | None = None, /, **options: Any) -> ViewT | Callable[[ViewT], ViewT]:
    """Mark a view as covered by ``IdempotencyMiddleware``, with per-view options.

    Options are the setting names without the ``IDEMPOTENCY_`` prefix, lower-cased:
    ``required``, ``methods``, ``ttl``, ``lease``, ``on_conflict``, ``wait_timeout``, …
    """

    def decorate(view: ViewT) -> ViewT:
        validate_options(options, owner=f"@idempotent on {view.__module__}.{view.__qualname__}")
        setattr(view, OPTIONS_ATTRIBUTE, dict(options))
        return view

    return decorate if view is None else decorate(view)


def idempotency_exempt(view: ViewT) -> ViewT:
    """Leave a view alone: the middleware neither requires nor honours keys for it."""
    setattr(view, EXEMPT_ATTRIBUTE, True)
    return view
