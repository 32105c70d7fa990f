"""The ``IDEMPOTENCY_*`` settings, read lazily and validated each time they are read."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from django_idempotency.options import (
    OPTIONS,
    SETTING_DEFAULTS,
    SETTING_PREFIX,
    setting_name,
    setting_problem,
)


class IdempotencySettings:
    """Read each setting from ``django.conf.settings`` on access, so overrides apply.

    ``idempotency_settings.TTL`` is the ``ttl`` option's setting as the policy holds it
    (converted by ``options.OPTIONS``: a timedelta); ``raw("ttl")`` is the value as written.
    A value that is not valid raises ``ImproperlyConfigured`` naming the setting and what it
    must be, never a bare error from deeper down: servers such as gunicorn run no system
    checks, so this is what the log shows (docs/settings.md, "Bad settings").
    """

    def validate(self) -> None:
        """Raise ``ImproperlyConfigured`` naming every setting that is not valid."""
        problems = [
            problem
            for name, default in SETTING_DEFAULTS.items()
            if (problem := setting_problem(name, getattr(settings, name, default)))
        ]
        if problems:
            raise ImproperlyConfigured(f"{'; '.join(problems)}.")

    def raw(self, option: str) -> Any:
        """Return the setting of ``option`` as written, or its default, once it is valid."""
        name = setting_name(option)
        value = getattr(settings, name, SETTING_DEFAULTS[name])
        problem = setting_problem(name, value)
        if problem is not None:
            raise ImproperlyConfigured(f"{problem}.")
        return value

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def value(self, option: str) -> Any:
        """Return the setting of ``option`` converted as the policy holds it.

        Kept once read, until a setting changes (``setting_changed``): requests read some
        settings directly (the header, the cache alias), and a bad value is never kept, so
        it is refused on every read.
        """
        try:
            return self._values[option]
        except KeyError:
            value = self._values[option] = OPTIONS[option].convert(self.raw(option))
            return value

    def forget(self) -> None:
        """Read every setting afresh from now on."""
        self._values.clear()
        for name in [name for name in vars(self) if name.isupper()]:
            delattr(self, name)

    def __getattr__(self, name: str) -> Any:
        # idempotency_settings.LEASE: the setting IDEMPOTENCY_LEASE, converted. Kept as an
        # instance attribute, so the next read finds it without coming here (see forget()).
        option = name.lower()
        if name.isupper() and option in OPTIONS:
            value = self.value(option)
            setattr(self, name, value)
            return value
        raise AttributeError(f"{name!r} is not an IDEMPOTENCY_* setting")


idempotency_settings = IdempotencySettings()


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    # DATABASES: IDEMPOTENCY_DATABASE is valid only as one of its aliases.
    if setting.startswith(SETTING_PREFIX) or setting in {"CACHES", "DATABASES"}:
        idempotency_settings.forget()
