"""Per-view options for the middleware: ``@idempotent(...)`` and ``@idempotency_exempt``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from django_idempotency.validation import validate_options

ViewT = TypeVar("ViewT", bound=Callable[..., Any])

#: Attribute holding the options given to ``@idempotent``.
OPTIONS_ATTRIBUTE = "idempotency_options"
#: Attribute set by ``@idempotency_exempt``.
EXEMPT_ATTRIBUTE = "idempotency_exempt"


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


def is_exempt(view: Callable[..., Any]) -> bool:
    return bool(getattr(view, EXEMPT_ATTRIBUTE, False))


def get_view_options(view: Callable[..., Any]) -> dict[str, Any] | None:
    """Return the options ``@idempotent`` gave ``view``, or None when it was not decorated."""
    return getattr(view, OPTIONS_ATTRIBUTE, None)
