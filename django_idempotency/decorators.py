"""``@idempotent(...)`` and ``@idempotency_exempt``: mark a plain view for the middleware."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from django.core.exceptions import ImproperlyConfigured

from django_idempotency.handling import (  # noqa: F401  (kept importable from here)
    EXEMPT_ATTRIBUTE,
    HANDLED_BY_VIEW_ATTRIBUTE,
    OPTIONS_ATTRIBUTE,
    get_view_options,
    is_drf_view,
    is_exempt,
    is_handled_by_middleware,
)
from django_idempotency.options import validate_options

ViewT = TypeVar("ViewT", bound=Callable[..., Any])


@overload
def idempotent(view: ViewT, /) -> ViewT: ...
@overload
def idempotent(view: None = None, /, **options: Any) -> Callable[[ViewT], ViewT]: ...
def idempotent(view: ViewT | None = None, /, **options: Any) -> ViewT | Callable[[ViewT], ViewT]:
    """Mark a view as covered by ``IdempotencyMiddleware``, with per-view options.

    Options are the setting names without the ``IDEMPOTENCY_`` prefix, lower-cased:
    ``required``, ``methods``, ``ttl``, ``lease``, ``on_conflict``, ``wait_timeout``, …
    An unknown or invalid option, or a DRF view (protected by ``IdempotencyMixin`` instead),
    raises ``ImproperlyConfigured`` where the view is decorated.
    """

    def decorate(view: ViewT) -> ViewT:
        owner = f"@idempotent on {view.__module__}.{view.__qualname__}"
        if is_drf_view(view):
            # The middleware never handles DRF views (see is_handled_by_middleware): the mark
            # would protect nothing, which on a payments view is worse than an error.
            raise ImproperlyConfigured(
                f"{owner}: a DRF view cannot be protected by @idempotent, because the "
                "middleware runs before DRF authenticates its caller. Use an APIView or "
                "viewset with IdempotencyMixin first among its bases instead."
            )
        validate_options(options, owner=owner)
        setattr(view, OPTIONS_ATTRIBUTE, dict(options))
        return view

    return decorate if view is None else decorate(view)


def idempotency_exempt(view: ViewT) -> ViewT:
    """Leave a view alone: the middleware neither requires nor honours keys for it."""
    setattr(view, EXEMPT_ATTRIBUTE, True)
    return view
