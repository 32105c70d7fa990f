"""System checks: misconfiguration is reported at start-up, each with an ID and a hint."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from fnmatch import fnmatchcase
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.middleware.gzip import GZipMiddleware
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils.module_loading import import_string

from django_idempotency import (
    checks_cache,  # noqa: F401  (registers the cache checks)
    checks_cors,  # noqa: F401  (registers the CORS check)
)
from django_idempotency.conf import idempotency_settings
from django_idempotency.handling import (
    get_view_options,
    is_drf_view,
    is_exempt,
    is_handled_by_middleware,
    is_handled_by_view,
)
from django_idempotency.options import (
    SETTING_DEFAULTS,
    SETTING_PREFIX,
    SETTING_VALIDATORS,
    setting_problem,
)
from django_idempotency.storage.registry import configured_storage_class
from django_idempotency.validation import SAFE_METHODS, did_you_mean

MIDDLEWARE_PATH = "django_idempotency.middleware.IdempotencyMiddleware"
AUTHENTICATION_MIDDLEWARE_PATH = "django.contrib.auth.middleware.AuthenticationMiddleware"


@register()
def check_settings(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """Report ``IDEMPOTENCY_*`` settings of the wrong type or range (E001)."""
    errors: list[CheckMessage] = []
    for name, (_is_valid, expected) in SETTING_VALIDATORS.items():
        problem = setting_problem(name, getattr(settings, name, SETTING_DEFAULTS[name]))
        if problem is not None:
            errors.append(
                Error(
                    f"{problem}.",
                    hint=f"Set {name} to {expected}, or remove it to use the default "
                    f"({SETTING_DEFAULTS[name]!r}).",
                    id="django_idempotency.E001",
                )
            )
    return errors


#: ``IDEMPOTENCY_*`` settings that belong to other idempotency packages, as ``fnmatch``
#: patterns: a project migrating from one still has them, so W003 leaves them alone.
OTHER_PACKAGES_SETTINGS = ("IDEMPOTENCY_KEY", "IDEMPOTENCY_KEY_*")


@register()
def check_unknown_settings(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn about ``IDEMPOTENCY_*`` settings this app does not know, misspellings first (W003)."""
    unknown = sorted(
        name
        for name in dir(settings)
        if name.startswith(SETTING_PREFIX)
        and name not in SETTING_DEFAULTS
        and not any(fnmatchcase(name, pattern) for pattern in OTHER_PACKAGES_SETTINGS)
    )
    return [
        Warning(
            f"{name} is not a django-idempotency setting, so it has no effect "
            f"({did_you_mean(name, SETTING_DEFAULTS)}).",
            hint="Rename it to the setting you meant, or remove it. If another package reads "
            'it, add "django_idempotency.W003" to SILENCED_SYSTEM_CHECKS.',
            id="django_idempotency.W003",
        )
        for name in unknown
    ]


@register()
def check_storage(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """Report an ``IDEMPOTENCY_STORAGE`` that cannot be imported or is not a storage (E002)."""
    try:
        idempotency_settings.raw("storage")
    except ImproperlyConfigured:
        return []  # E001 reports it
    try:
        configured_storage_class()
    except ImproperlyConfigured as problem:
        return [
            Error(
                str(problem),
                hint="Use django_idempotency.storage.DatabaseStorage or "
                "django_idempotency.storage.CacheStorage, or the dotted path of your own "
                "subclass of django_idempotency.storage.Storage.",
                id="django_idempotency.E002",
            )
        ]
    return []


@register()
def check_middleware(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """Report the middleware placed before authentication (E003)."""
    middleware = list(settings.MIDDLEWARE)
    if MIDDLEWARE_PATH not in middleware or AUTHENTICATION_MIDDLEWARE_PATH not in middleware:
        return []
    if middleware.index(MIDDLEWARE_PATH) < middleware.index(AUTHENTICATION_MIDDLEWARE_PATH):
        return [
            Error(
                "IdempotencyMiddleware comes before AuthenticationMiddleware, so every "
                "request would share the anonymous scope.",
                hint=f"Move {MIDDLEWARE_PATH!r} after {AUTHENTICATION_MIDDLEWARE_PATH!r} "
                "in MIDDLEWARE.",
                id="django_idempotency.E003",
            )
        ]
    return []


@register()
def check_required_everywhere(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn that a global ``IDEMPOTENCY_REQUIRED`` also covers forms such as the admin (W001)."""
    if getattr(settings, "IDEMPOTENCY_REQUIRED", False) is not True:
        return []  # not required, or not a bool (E001 reports that)
    if MIDDLEWARE_PATH not in settings.MIDDLEWARE:
        return []
    try:
        methods = " and ".join(sorted(idempotency_settings.METHODS))
        header = idempotency_settings.HEADER
    except ImproperlyConfigured:  # E001 reports a bad IDEMPOTENCY_METHODS or HEADER
        return []
    return [
        Warning(
            "IDEMPOTENCY_REQUIRED is True with IdempotencyMiddleware installed, so every "
            f"{methods} to every view needs an {header} header, including HTML forms "
            "such as the admin and login pages.",
            hint="Require keys per view instead (@idempotent(required=True), "
            "idempotency_required = True), or mark form views @idempotency_exempt.",
            id="django_idempotency.W001",
        )
    ]


@register(Tags.urls)
def check_decorated_views(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Report ``@idempotent`` views left unprotected because the middleware is absent (E004)."""
    if MIDDLEWARE_PATH in settings.MIDDLEWARE or not getattr(settings, "ROOT_URLCONF", None):
        return []
    decorated = sorted(
        {
            f"{view.__module__}.{getattr(view, '__qualname__', view.__class__.__name__)}"
            for view in _views(get_resolver().url_patterns)
            if get_view_options(view) is not None and is_handled_by_middleware(view)
        }
    )
    if not decorated:
        return []
    return [
        Error(
            f"{len(decorated)} view(s) use @idempotent but IdempotencyMiddleware is not "
            f"installed, so their keys are ignored: {', '.join(decorated)}.",
            hint=f"Add {MIDDLEWARE_PATH!r} to MIDDLEWARE after AuthenticationMiddleware.",
            id="django_idempotency.E004",
        )
    ]


@register(Tags.urls)
def check_drf_views_without_mixin(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn about DRF views the middleware leaves alone because they lack the mixin (W002)."""
    if MIDDLEWARE_PATH not in settings.MIDDLEWARE or not getattr(settings, "ROOT_URLCONF", None):
        return []
    try:
        covered = idempotency_settings.METHODS - SAFE_METHODS
        header = idempotency_settings.HEADER
    except ImproperlyConfigured:  # a bad IDEMPOTENCY_METHODS or HEADER is E001's to report
        return []
    unprotected = sorted(
        {
            f"{view.cls.__module__}.{view.cls.__qualname__}"  # type: ignore[attr-defined]
            for view in _views(get_resolver().url_patterns)
            if is_drf_view(view)
            and not is_exempt(view)
            and not is_handled_by_view(view)
            and _accepted_methods(view) & covered
        }
    )
    if not unprotected:
        return []
    return [
        Warning(
            f"{len(unprotected)} DRF view(s) accept {' or '.join(sorted(covered))} without "
            "IdempotencyMixin, so IdempotencyMiddleware leaves them alone and ignores their "
            f"{header} headers: {', '.join(unprotected)}.",
            hint="Put IdempotencyMixin first among each view's bases, e.g. class "
            "OrderViewSet(IdempotencyMixin, ModelViewSet): it scopes keys by the user DRF "
            "authenticated, after DRF's permission checks. Mark views that need no keys "
            "with @idempotency_exempt.",
            id="django_idempotency.W002",
        )
    ]


def _accepted_methods(view: Callable[..., Any]) -> set[str]:
    """Return the HTTP methods a DRF view function answers."""
    actions = getattr(view, "actions", None)  # a viewset routed by a router
    if actions:
        return {method.upper() for method in actions}
    view_class = view.cls  # type: ignore[attr-defined]
    return {
        method.upper() for method in view_class.http_method_names if hasattr(view_class, method)
    }


def _views(patterns: Sequence[URLPattern | URLResolver]) -> Iterator[Callable[..., Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _views(pattern.url_patterns)
        else:
            yield pattern.callback


GZIP_MIDDLEWARE_PATH = "django.middleware.gzip.GZipMiddleware"


@register()
def check_compression_order(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn about GZipMiddleware inside the middleware, which then stores gzipped bodies (W004)."""
    middleware = list(settings.MIDDLEWARE)
    if MIDDLEWARE_PATH not in middleware:
        return []
    inner = middleware[middleware.index(MIDDLEWARE_PATH) + 1 :]
    compressors = [path for path in inner if _is_gzip_middleware(path)]
    if not compressors:
        return []
    return [
        Warning(
            f"{', '.join(compressors)} comes after IdempotencyMiddleware in MIDDLEWARE, so "
            "responses are stored gzipped for the first request's Accept-Encoding, and a "
            "retry that does not accept gzip gets 406 instead of its replay.",
            hint=f"Move it before {MIDDLEWARE_PATH!r}, where it compresses each replay "
            "for the retry's own Accept-Encoding.",
            id="django_idempotency.W004",
        )
    ]


def _is_gzip_middleware(path: str) -> bool:
    if path == GZIP_MIDDLEWARE_PATH:
        return True
    try:
        middleware = import_string(path)
    except ImportError:
        return False  # Django reports a middleware that cannot be imported when it loads it
    return isinstance(middleware, type) and issubclass(middleware, GZipMiddleware)


#: The integrations a setting turns on: the module each needs, and its extra.
_INTEGRATIONS = {
    "IDEMPOTENCY_METRICS": ("prometheus_client", "metrics", "prometheus-client", "E005"),
    "IDEMPOTENCY_TRACING": ("opentelemetry.trace", "tracing", "opentelemetry-api", "E007"),
}


def wanted_and_installable(setting: str) -> bool:
    """Whether the integration ``setting`` turns on is asked for and its library importable."""
    return getattr(settings, setting, False) is True and _has_module(_INTEGRATIONS[setting][0])


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


@register()
def check_integrations(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Report an integration asked for whose library is not installed (E005, E007)."""
    errors: list[CheckMessage] = []
    for setting, (module, extra, library, check_id) in _INTEGRATIONS.items():
        if getattr(settings, setting, False) is not True or _has_module(module):
            continue
        what = "no metric is counted" if extra == "metrics" else "no span is made"
        errors.append(
            Error(
                f"{setting} is True, but {library} is not installed: {what}.",
                hint=f'pip install "django-idempotency[{extra}]"',
                id=f"django_idempotency.{check_id}",
            )
        )
    return errors


@register()
def check_encryptor(app_configs: Sequence[AppConfig] | None, **kwargs: Any) -> list[CheckMessage]:
    """Report an ``IDEMPOTENCY_ENCRYPTOR`` that cannot be built with its keys (E006)."""
    if getattr(settings, "IDEMPOTENCY_ENCRYPTOR", None) is None:
        return []
    try:
        idempotency_settings.value("encryptor")
    except ImproperlyConfigured as problem:
        if any(
            setting_problem(name, getattr(settings, name, SETTING_DEFAULTS[name]))
            for name in ("IDEMPOTENCY_ENCRYPTOR", "IDEMPOTENCY_ENCRYPTION_KEYS")
        ):
            return []  # E001 reports a value of the wrong type
        return [
            Error(
                f"Stored responses cannot be encrypted: {problem}",
                hint="See docs/data-protection.md.",
                id="django_idempotency.E006",
            )
        ]
    return []


@register(deploy=True)
def check_disabled_in_production(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Report ``IDEMPOTENCY_DISABLED`` set where ``DEBUG`` is off (E008)."""
    if getattr(settings, "IDEMPOTENCY_DISABLED", False) is not True or settings.DEBUG:
        return []
    return [
        Error(
            "IDEMPOTENCY_DISABLED is True and DEBUG is False: no request is protected, "
            "retries run twice.",
            hint="IDEMPOTENCY_DISABLED is for tests; remove it from production settings.",
            id="django_idempotency.E008",
        )
    ]
