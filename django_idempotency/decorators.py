"""What a view tells the middleware: ``@idempotent(...)``, ``@idempotency_exempt``, or its kind."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar, overload

from django.core.exceptions import ImproperlyConfigured

from django_idempotency.validation import validate_options

ViewT = TypeVar("ViewT", bound=Callable[..., Any])

#: Attribute holding the options given to ``@idempotent``.
OPTIONS_ATTRIBUTE = "idempotency_options"
#: Attribute set by ``@idempotency_exempt``.
EXEMPT_ATTRIBUTE = "idempotency_exempt"
#: Set on a view function whose view class handles keys itself (the DRF mixin).
HANDLED_BY_VIEW_ATTRIBUTE = "idempotency_handled_by_view"


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


def is_exempt(view: Callable[..., Any]) -> bool:
    return bool(getattr(view, EXEMPT_ATTRIBUTE, False))


def get_view_options(view: Callable[..., Any]) -> dict[str, Any] | None:
    """Return the options ``@idempotent`` gave ``view``, or None when it was not decorated."""
    return getattr(view, OPTIONS_ATTRIBUTE, None)


def is_handled_by_middleware(view: Callable[..., Any]) -> bool:
    """Whether ``IdempotencyMiddleware`` handles requests to ``view``.

    Not when it is exempt, when its view class handles keys itself (the DRF mixin), nor for
    any other DRF view: its user is known only once DRF has authenticated the request, after
    the middleware has run, so the middleware could not tell its callers apart
    (docs/behaviour.md, "Security model"). The check ``W002`` names such views.
    """
    if is_exempt(view) or getattr(view, HANDLED_BY_VIEW_ATTRIBUTE, False):
        return False
    return not is_drf_view(view)


def is_drf_view(view: Callable[..., Any]) -> bool:
    """Whether ``view`` is a DRF view function (``APIView.as_view()``, a viewset, ``@api_view``)."""
    # DRF's as_view() sets ``cls``; reading the class's MRO by name keeps DRF unimported.
    view_class = getattr(view, "cls", None)
    return isinstance(view_class, type) and _is_api_view_class(view_class)


@lru_cache(maxsize=1024)
def _is_api_view_class(view_class: type) -> bool:
    return any(
        base.__name__ == "APIView" and base.__module__ == "rest_framework.views"
        for base in view_class.__mro__
    )
