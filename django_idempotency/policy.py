"""What applies to one view: the settings, overridden per view."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils.module_loading import import_string

from django_idempotency.conf import (
    DEFAULT_REPLAY_HEADERS,
    NEVER_REPLAYED_HEADERS,
    AnonymousMode,
    OnConflict,
    idempotency_settings,
    resolve_callable,
    to_timedelta,
)
from django_idempotency.storage.base import Storage
from django_idempotency.validation import (
    OPTION_VALIDATORS,
    SAFE_METHODS,
    invalid_options,
    validate_options,
)

logger = logging.getLogger(__name__)
#: Per-view options, as ``@idempotent(name=...)`` keywords and ``idempotency_<name>`` attributes.
OPTION_NAMES = tuple(OPTION_VALIDATORS)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Everything the engine needs to decide about one request."""

    storage: Storage
    header: str
    methods: frozenset[str]
    required: bool
    ttl: timedelta
    lease: timedelta
    on_conflict: OnConflict
    wait_timeout: timedelta
    retry_after: timedelta
    mismatch_status: int
    replay_headers: frozenset[str]
    max_response_size: int
    atomic: bool
    store_server_errors: bool
    fail_open: bool
    anonymous: AnonymousMode
    scope: Callable[[HttpRequest], str]
    fingerprint: Callable[[HttpRequest], str]

    @property
    def is_atomic(self) -> bool:
        """Whether the view's writes and the stored response commit together."""
        return self.atomic and self.storage.is_transactional

    def covers(self, method: str) -> bool:
        """Whether requests with ``method`` take a key: listed, and never a safe method."""
        upper = method.upper()
        return upper in self.methods and upper not in SAFE_METHODS

    def applies_to(self, request: HttpRequest) -> bool:
        """Whether the layer acts on ``request`` (see ``applies_to``)."""
        return applies_to(request, methods=self.methods, header=self.header, required=self.required)

    def should_replay_header(self, name: str) -> bool:
        lowered = name.lower()
        return lowered not in NEVER_REPLAYED_HEADERS and lowered in self.replay_headers

    @classmethod
    def build(cls, overrides: Mapping[str, Any] | None = None) -> Policy:
        """Return the settings' policy with ``overrides``; ImproperlyConfigured on bad ones."""
        given = {name: value for name, value in (overrides or {}).items() if value is not None}
        if not given:
            return _settings_policy()
        validate_options(given, owner="idempotency options")
        fields = dict(_settings_fields())
        for name, value in given.items():
            if name == "replay_headers":
                fields[name] = fields[name] | _lowered(value)
            else:
                fields[name] = _CONVERTERS[name](value)
        if "storage" in given:
            fields["storage"] = get_storage(fields["storage"], source="The storage option")
        else:
            fields["storage"] = get_storage(fields["storage"])
        return cls(**fields)


def applies_to(
    request: HttpRequest, *, methods: frozenset[str] | None, header: str | None, required: bool
) -> bool:
    """Whether the layer acts on ``request``: the one answer to "is this request covered?".

    It is, when its method is covered (never a safe method) and it carries a key or must
    carry one. ``None`` means the methods or the header are not known, because their
    setting is bad: then every unsafe method counts as covered and every request as keyed
    (fail closed, docs/settings.md "Bad settings").
    """
    method = (request.method or "").upper()
    if method in SAFE_METHODS or (methods is not None and method not in methods):
        return False
    return required or header is None or header in request.headers


def policy_for(request: HttpRequest, overrides: Mapping[str, Any] | None = None) -> Policy | None:
    """Return the policy for ``request``, or None when a bad setting leaves it alone.

    A bad setting or per-view value raises ``ImproperlyConfigured`` (naming it) for the
    requests the layer covers, so their view never runs; requests it does not cover (safe
    methods, unkeyed requests where keys are optional) go on as if the layer were absent,
    and the problem is logged once.
    """
    try:
        return Policy.build(overrides)
    except ImproperlyConfigured as error:
        if _applies_despite_misconfiguration(request, overrides or {}):
            raise
        _log_misconfiguration(str(error))
        return None


def _applies_despite_misconfiguration(request: HttpRequest, overrides: Mapping[str, Any]) -> bool:
    # Decide coverage from what is valid; what is not counts as covering (fail closed).
    methods: frozenset[str] | None = None
    if overrides.get("methods") is not None:
        if not invalid_options({"methods": overrides["methods"]}):
            methods = _upper_methods(overrides["methods"])
    else:
        with contextlib.suppress(ImproperlyConfigured):
            methods = _upper_methods(idempotency_settings.METHODS)
    header: str | None = None
    with contextlib.suppress(ImproperlyConfigured):
        header = idempotency_settings.HEADER
    required = True
    if isinstance(overrides.get("required"), bool):
        required = overrides["required"]
    elif overrides.get("required") is None:
        with contextlib.suppress(ImproperlyConfigured):
            required = idempotency_settings.REQUIRED
    return applies_to(request, methods=methods, header=header, required=required)


@functools.cache
def _log_misconfiguration(problem: str) -> None:
    """Log a bad setting once (until a setting changes), when it first leaves a request alone."""
    logger.error(
        "django-idempotency is misconfigured: %s Requests it covers are refused with "
        "ImproperlyConfigured until this is fixed; others go on unprotected by it.",
        problem,
    )


@functools.cache
def _settings_policy() -> Policy:
    """Return the policy of a view without overrides, built once until a setting changes."""
    fields = dict(_settings_fields())
    fields["storage"] = get_storage(fields["storage"])
    return Policy(**fields)


def _unchanged(value: Any) -> Any:
    return value


def _upper_methods(methods: Iterable[str]) -> frozenset[str]:
    return frozenset(method.upper() for method in methods)


#: How a per-view override becomes a policy field (``replay_headers`` adds to the settings').
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "storage": _unchanged,
    "methods": _upper_methods,
    "required": bool,
    "ttl": to_timedelta,
    "lease": to_timedelta,
    "on_conflict": _unchanged,
    "wait_timeout": to_timedelta,
    "retry_after": to_timedelta,
    "mismatch_status": int,
    "max_response_size": int,
    "atomic": bool,
    "store_server_errors": bool,
    "fail_open": bool,
    "anonymous": _unchanged,
    "scope": resolve_callable,
    "fingerprint": resolve_callable,
}


@functools.cache
def _settings_fields() -> dict[str, Any]:
    """Return the policy fields the settings give, read once until a setting changes.

    Every request builds a policy; reading the settings and importing the scope and
    fingerprint callables each time was a measurable part of a replay (docs/benchmarks.md).
    The storage stays a dotted path here, so a view that overrides it never instantiates it.
    """
    s = idempotency_settings
    s.validate()
    return {
        "storage": s.STORAGE,
        "header": s.HEADER,
        "methods": _upper_methods(s.METHODS),
        "required": s.REQUIRED,
        "ttl": s.TTL,
        "lease": s.LEASE,
        "on_conflict": s.ON_CONFLICT,
        "wait_timeout": s.WAIT_TIMEOUT,
        "retry_after": s.RETRY_AFTER,
        "mismatch_status": int(s.MISMATCH_STATUS),
        "replay_headers": DEFAULT_REPLAY_HEADERS | s.REPLAY_HEADERS,
        "max_response_size": int(s.MAX_RESPONSE_SIZE),
        "atomic": s.ATOMIC,
        "store_server_errors": s.STORE_SERVER_ERRORS,
        "fail_open": s.FAIL_OPEN,
        "anonymous": s.ANONYMOUS,
        "scope": s.SCOPE,
        "fingerprint": s.FINGERPRINT,
    }


def _lowered(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.lower() for name in names)


def get_storage(storage: str | Storage, *, source: str = "IDEMPOTENCY_STORAGE") -> Storage:
    """Return the storage a dotted path names (one instance per path), or the instance given.

    A path that does not name a Storage class raises ``ImproperlyConfigured`` naming
    ``source``, where the path came from.
    """
    if isinstance(storage, Storage):
        return storage
    try:
        return _storage_for_path(storage)
    except _NotAStorage as problem:
        raise ImproperlyConfigured(f"{source} is {storage!r}, which {problem}.") from problem


class _NotAStorage(Exception):
    """A dotted path that names no Storage class; the message says why, after "which"."""


@functools.cache
def _storage_for_path(path: str) -> Storage:
    # Checked once per path: a view with its own options builds its policy per request.
    try:
        storage_class = import_string(path)
    except ImportError as exc:
        raise _NotAStorage(f"cannot be imported ({exc})") from exc
    if not (isinstance(storage_class, type) and issubclass(storage_class, Storage)):
        raise _NotAStorage("is not a django_idempotency Storage subclass")
    return storage_class()


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("IDEMPOTENCY_") or setting in {"CACHES", "DATABASES"}:
        _settings_fields.cache_clear()
        _settings_policy.cache_clear()
        _storage_for_path.cache_clear()
        _log_misconfiguration.cache_clear()
