"""The app's configuration: the system checks, and metrics and tracing when the settings ask."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class IdempotencyConfig(AppConfig):
    name = "django_idempotency"
    verbose_name = _("Idempotency")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_idempotency import checks

        if checks.wanted_and_installable("IDEMPOTENCY_METRICS"):
            from django_idempotency import metrics

            metrics.install()
        if checks.wanted_and_installable("IDEMPOTENCY_TRACING"):
            from django_idempotency import tracing

            tracing.install()
