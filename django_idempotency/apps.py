"""The app's configuration: the system checks, and the metrics when the settings ask for them."""

from __future__ import annotations

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class IdempotencyConfig(AppConfig):
    name = "django_idempotency"
    verbose_name = _("Idempotency")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django_idempotency import checks

        if checks.metrics_wanted_and_installable():
            from django_idempotency import metrics

            metrics.install()
