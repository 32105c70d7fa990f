"""Typed, lazily read ``IDEMPOTENCY_*`` settings, each validated as it is read."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, Literal, cast

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from django_idempotency.validation import SETTING_DEFAULTS, setting_problem

OnConflict = Literal["reject", "wait"]
#: How keyed requests without a principal are scoped (docs/behaviour.md, "Security model").
AnonymousMode = Literal["session", "refuse", "shared"]

#: Each ``IDEMPOTENCY_*`` setting's default, derived from the one table of options.
DEFAULTS: dict[str, Any] = SETTING_DEFAULTS

#: Headers a replay carries by default (DESIGN §3); settings and views may add more.
DEFAULT_REPLAY_HEADERS = frozenset(
    {
        "content-type",
        "content-encoding",
        "content-language",
        "vary",
        "location",
        "etag",
        "last-modified",
        "link",
    }
)

#: Headers that are never stored or replayed, whatever a view or setting adds.
NEVER_REPLAYED_HEADERS = frozenset(
    {
        "set-cookie",
        "authorization",
        "www-authenticate",
        "proxy-authenticate",
        "proxy-authorization",
        "date",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "content-length",
        "idempotent-replayed",
    }
)


def to_timedelta(value: timedelta | int | float) -> timedelta:
    """Return ``value`` as a timedelta; plain numbers are seconds."""
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=value)


class IdempotencySettings:
    """Read each setting from ``django.conf.settings`` on access, so overrides apply.

    A value that is not valid raises ``ImproperlyConfigured`` naming the setting and what it
    must be, never a bare error from deeper down: servers such as gunicorn run no system
    checks, so this is what the log shows (docs/settings.md, "Bad settings").
    """

    def validate(self) -> None:
        """Raise ``ImproperlyConfigured`` naming every setting that is not valid."""
        problems = [
            problem
            for name in DEFAULTS
            if (problem := setting_problem(name, getattr(settings, name, DEFAULTS[name])))
        ]
        if problems:
            raise ImproperlyConfigured(f"{'; '.join(problems)}.")

    def _get(self, name: str) -> Any:
        value = getattr(settings, name, DEFAULTS[name])
        problem = setting_problem(name, value)
        if problem is not None:
            raise ImproperlyConfigured(f"{problem}.")
        return value

    @property
    def STORAGE(self) -> str:
        return cast(str, self._get("IDEMPOTENCY_STORAGE"))

    @property
    def DATABASE(self) -> str | None:
        return cast("str | None", self._get("IDEMPOTENCY_DATABASE"))

    @property
    def CACHE_ALIAS(self) -> str:
        return cast(str, self._get("IDEMPOTENCY_CACHE_ALIAS"))

    @property
    def HEADER(self) -> str:
        return cast(str, self._get("IDEMPOTENCY_HEADER"))

    @property
    def METHODS(self) -> frozenset[str]:
        return frozenset(m.upper() for m in self._get("IDEMPOTENCY_METHODS"))

    @property
    def REQUIRED(self) -> bool:
        return bool(self._get("IDEMPOTENCY_REQUIRED"))

    @property
    def TTL(self) -> timedelta:
        return to_timedelta(self._get("IDEMPOTENCY_TTL"))

    @property
    def LEASE(self) -> timedelta:
        return to_timedelta(self._get("IDEMPOTENCY_LEASE"))

    @property
    def ON_CONFLICT(self) -> OnConflict:
        return cast(OnConflict, self._get("IDEMPOTENCY_ON_CONFLICT"))

    @property
    def WAIT_TIMEOUT(self) -> timedelta:
        return to_timedelta(self._get("IDEMPOTENCY_WAIT_TIMEOUT"))

    @property
    def RETRY_AFTER(self) -> timedelta:
        return to_timedelta(self._get("IDEMPOTENCY_RETRY_AFTER"))

    @property
    def MISMATCH_STATUS(self) -> int:
        return cast(int, self._get("IDEMPOTENCY_MISMATCH_STATUS"))

    @property
    def REPLAY_HEADERS(self) -> frozenset[str]:
        return frozenset(h.lower() for h in self._get("IDEMPOTENCY_REPLAY_HEADERS"))

    @property
    def MAX_RESPONSE_SIZE(self) -> int:
        return cast(int, self._get("IDEMPOTENCY_MAX_RESPONSE_SIZE"))

    @property
    def ATOMIC(self) -> bool:
        return bool(self._get("IDEMPOTENCY_ATOMIC"))

    @property
    def STORE_SERVER_ERRORS(self) -> bool:
        return bool(self._get("IDEMPOTENCY_STORE_SERVER_ERRORS"))

    @property
    def FAIL_OPEN(self) -> bool:
        return bool(self._get("IDEMPOTENCY_FAIL_OPEN"))

    @property
    def ANONYMOUS(self) -> AnonymousMode:
        return cast(AnonymousMode, self._get("IDEMPOTENCY_ANONYMOUS"))

    @property
    def SCOPE(self) -> Callable[..., str]:
        # Validated by importing it (validation.is_importable_callable).
        return resolve_callable(self._get("IDEMPOTENCY_SCOPE"))

    @property
    def FINGERPRINT(self) -> Callable[..., str]:
        return resolve_callable(self._get("IDEMPOTENCY_FINGERPRINT"))


def resolve_callable(value: str | Callable[..., str]) -> Callable[..., str]:
    """Import a dotted path, or return a callable as it is."""
    if isinstance(value, str):
        return cast("Callable[..., str]", import_string(value))
    return value


idempotency_settings = IdempotencySettings()
