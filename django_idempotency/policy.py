"""What applies to one view: the settings, overridden per view."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

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
from django_idempotency.validation import OPTION_VALIDATORS, SAFE_METHODS, validate_options

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
        fields["storage"] = get_storage(fields["storage"])
        return cls(**fields)


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


def get_storage(storage: str | Storage) -> Storage:
    """Return the storage a dotted path names (one instance per path), or the instance given."""
    if isinstance(storage, Storage):
        return storage
    return _storage_for_path(storage)


@functools.cache
def _storage_for_path(path: str) -> Storage:
    storage = import_string(path)()
    if not isinstance(storage, Storage):
        raise TypeError(f"{path} is not a django_idempotency Storage")
    return storage


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("IDEMPOTENCY_") or setting in {"CACHES", "DATABASES"}:
        _settings_fields.cache_clear()
        _settings_policy.cache_clear()
        _storage_for_path.cache_clear()
