"""The stored record of one idempotency key."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_idempotency.clock import database_now

#: Column widths, which ``DatabaseStorage`` reports to the engine.
SCOPE_MAX_LENGTH = 255
FINGERPRINT_MAX_LENGTH = 64


class IdempotencyKeyQuerySet(models.QuerySet["IdempotencyKey"]):
    """Records by state and expiry; "now" is the database's clock unless given (DESIGN §1)."""

    def expired(self, now: datetime | None = None) -> IdempotencyKeyQuerySet:
        """Return records whose expiry (lease for in-flight keys, retention otherwise) passed."""
        return self.filter(expires_at__lte=now or database_now(self.db))

    def live(self, now: datetime | None = None) -> IdempotencyKeyQuerySet:
        """Return records that still answer requests."""
        return self.filter(expires_at__gt=now or database_now(self.db))

    def in_flight(self) -> IdempotencyKeyQuerySet:
        return self.filter(state=IdempotencyKey.State.IN_FLIGHT)

    def purgeable(
        self, now: datetime | None = None, *, grace: timedelta = timedelta(0)
    ) -> IdempotencyKeyQuerySet:
        """Return expired records, keeping in-flight ones until ``grace`` after their lease."""
        now = now or database_now(self.db)
        finished = ~models.Q(state=IdempotencyKey.State.IN_FLIGHT)
        stale = models.Q(state=IdempotencyKey.State.IN_FLIGHT, expires_at__lte=now - grace)
        return self.expired(now).filter(finished | stale)


class IdempotencyKey(models.Model):
    class State(models.TextChoices):
        IN_FLIGHT = "in_flight", _("in flight")
        COMPLETED = "completed", _("completed")
        NOT_REPLAYABLE = "not_replayable", _("not replayable")

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(_("scope"), max_length=SCOPE_MAX_LENGTH)
    key = models.CharField(_("key"), max_length=255)
    state = models.CharField(_("state"), max_length=16, choices=State.choices)
    fingerprint = models.CharField(_("request fingerprint"), max_length=FINGERPRINT_MAX_LENGTH)
    token = models.CharField(_("fencing token"), max_length=32)
    method = models.CharField(_("method"), max_length=16)
    path = models.TextField(_("path"))
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    completed_at = models.DateTimeField(_("completed at"), null=True, blank=True)
    expires_at = models.DateTimeField(
        _("expires at"),
        help_text=_(
            "While in flight, when the lease ends; once completed, when the response expires."
        ),
    )
    response_status = models.PositiveSmallIntegerField(_("response status"), null=True, blank=True)
    response_headers = models.JSONField(_("response headers"), default=list, blank=True)
    response_body = models.BinaryField(_("response body"), default=b"", blank=True)

    objects = IdempotencyKeyQuerySet.as_manager()

    class Meta:
        verbose_name = _("idempotency key")
        verbose_name_plural = _("idempotency keys")
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="django_idempotency_scope_key"),
        ]
        indexes = [
            models.Index(fields=["expires_at"], name="django_idem_expires_at"),
            models.Index(fields=["created_at"], name="django_idem_created_at"),
            # The admin's state filters and the purge of stuck in-flight keys.
            models.Index(fields=["state", "expires_at"], name="django_idem_state_expires"),
            # The admin's search by key alone (the unique index leads with scope).
            models.Index(fields=["key"], name="django_idem_key"),
        ]

    def __str__(self) -> str:
        return f"{self.key} ({self.scope})"
