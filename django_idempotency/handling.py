"""Who handles a view's keys: read from the marks the decorators and the DRF mixin leave on it.

The entry points never import each other (DESIGN §6): ``@idempotent`` and ``@idempotency_exempt``
write these attributes, the DRF mixin sets ``HANDLED_BY_VIEW_ATTRIBUTE``, and the middleware,
the system checks and the OpenAPI extension read them here, by name.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

#: Attribute holding the options given to ``@idempotent``.
OPTIONS_ATTRIBUTE = "idempotency_options"
#: Attribute set by ``@idempotency_exempt``.
EXEMPT_ATTRIBUTE = "idempotency_exempt"
#: Set on a view class, and on its view functions, that handles keys itself (the DRF mixin).
HANDLED_BY_VIEW_ATTRIBUTE = "idempotency_handled_by_view"


def is_exempt(view: Callable[..., Any]) -> bool:
    """Whether ``@idempotency_exempt`` marked ``view``."""
    return bool(getattr(view, EXEMPT_ATTRIBUTE, False))


def get_view_options(view: Callable[..., Any]) -> dict[str, Any] | None:
    """Return the options ``@idempotent`` gave ``view``, or None when it was not decorated."""
    return getattr(view, OPTIONS_ATTRIBUTE, None)


def is_handled_by_view(view: object) -> bool:
    """Whether a view function, class or instance handles keys itself (the DRF mixin)."""
    return bool(getattr(view, HANDLED_BY_VIEW_ATTRIBUTE, False))


def is_handled_by_middleware(view: Callable[..., Any]) -> bool:
    """Whether ``IdempotencyMiddleware`` handles requests to ``view``.

    Not when it is exempt, when its view class handles keys itself (the DRF mixin), nor for
    any other DRF view: its user is known only once DRF has authenticated the request, after
    the middleware has run, so the middleware could not tell its callers apart
    (docs/behaviour.md, "Security model"). The check ``W002`` names such views.
    """
    if is_exempt(view) or is_handled_by_view(view):
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
