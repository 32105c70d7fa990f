"""System checks for browser clients behind django-cors-headers: the headers they must see.

A browser on another origin sends ``Idempotency-Key`` only if the preflight allows it, and
reads ``Idempotent-Replayed`` and ``Retry-After`` only if the response exposes them; without
them a browser client can neither send a key nor tell a replay or a wait (docs/usage.md,
"Browser clients").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Warning, register
from django.core.exceptions import ImproperlyConfigured

from django_idempotency.conf import idempotency_settings
from django_idempotency.responses import REPLAYED_HEADER

#: What a browser client reads from this app's answers.
EXPOSED = ("Retry-After", REPLAYED_HEADER)


@register()
def check_cors_headers(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn when django-cors-headers hides the key or the replay and wait headers (W005)."""
    if not apps.is_installed("corsheaders"):
        return []
    from corsheaders.defaults import default_headers

    try:
        header = idempotency_settings.HEADER
    except ImproperlyConfigured:
        return []  # E001 reports it
    allowed = {name.lower() for name in getattr(settings, "CORS_ALLOW_HEADERS", default_headers)}
    exposed = {name.lower() for name in getattr(settings, "CORS_EXPOSE_HEADERS", ())}
    missing = []
    if header.lower() not in allowed:
        missing.append(f"{header!r} in CORS_ALLOW_HEADERS")
    missing += [
        f"{name!r} in CORS_EXPOSE_HEADERS" for name in EXPOSED if name.lower() not in exposed
    ]
    if not missing:
        return []
    return [
        Warning(
            "django-cors-headers is installed, but browser clients on other origins cannot "
            f"use idempotency keys fully: add {', '.join(missing)}.",
            hint="CORS_ALLOW_HEADERS = (*corsheaders.defaults.default_headers, "
            f'"{header}"); CORS_EXPOSE_HEADERS = ["Retry-After", "{REPLAYED_HEADER}"]',
            id="django_idempotency.W005",
        )
    ]
