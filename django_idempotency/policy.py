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
    OnConflict,
    idempotency_settings,
    resolve_callable,
    to_timedelta,
)
from django_idempotency.storage.base import Storage

#: Per-view options, as ``@idempotent(name=...)`` keywords and ``idempotency_<name>`` attributes.
OPTION_NAMES = (
    "required",
    "methods",
    "ttl",
    "lease",
    "on_conflict",
    "wait_timeout",
    "retry_after",
    "mismatch_status",
    "replay_headers",
    "max_response_size",
    "atomic",
    "store_server_errors",
    "fail_open",
    "scope",
    "fingerprint",
    "storage",
)


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
    scope: Callable[[HttpRequest], str]
    fingerprint: Callable[[HttpRequest], str]

    @property
    def is_atomic(self) -> bool:
        """Whether the view's writes and the stored response commit together."""
        return self.atomic and self.storage.is_transactional

    def should_replay_header(self, name: str) -> bool:
        lowered = name.lower()
        return lowered not in NEVER_REPLAYED_HEADERS and lowered in self.replay_headers

    @classmethod
    def build(cls, overrides: Mapping[str, Any] | None = None) -> Policy:
        """Return the settings' policy with ``overrides`` (unknown names are an error) applied."""
        given = {name: value for name, value in (overrides or {}).items() if value is not None}
        unknown = set(given) - set(OPTION_NAMES)
        if unknown:
            raise TypeError(f"unknown idempotency options: {', '.join(sorted(unknown))}")
        s = idempotency_settings

        def pick(name: str, default: Any) -> Any:
            return given.get(name, default)

        return cls(
            storage=get_storage(pick("storage", s.STORAGE)),
            header=s.HEADER,
            methods=frozenset(m.upper() for m in pick("methods", s.METHODS)),
            required=bool(pick("required", s.REQUIRED)),
            ttl=to_timedelta(pick("ttl", s.TTL)),
            lease=to_timedelta(pick("lease", s.LEASE)),
            on_conflict=pick("on_conflict", s.ON_CONFLICT),
            wait_timeout=to_timedelta(pick("wait_timeout", s.WAIT_TIMEOUT)),
            retry_after=to_timedelta(pick("retry_after", s.RETRY_AFTER)),
            mismatch_status=int(pick("mismatch_status", s.MISMATCH_STATUS)),
            replay_headers=DEFAULT_REPLAY_HEADERS
            | s.REPLAY_HEADERS
            | _lowered(pick("replay_headers", ())),
            max_response_size=int(pick("max_response_size", s.MAX_RESPONSE_SIZE)),
            atomic=bool(pick("atomic", s.ATOMIC)),
            store_server_errors=bool(pick("store_server_errors", s.STORE_SERVER_ERRORS)),
            fail_open=bool(pick("fail_open", s.FAIL_OPEN)),
            scope=resolve_callable(pick("scope", s.SCOPE)),
            fingerprint=resolve_callable(pick("fingerprint", s.FINGERPRINT)),
        )


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
def _forget_storages(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("IDEMPOTENCY_") or setting in {"CACHES", "DATABASES"}:
        _storage_for_path.cache_clear()
