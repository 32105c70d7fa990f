"""The record of one idempotency key, and the queries and fenced writes run on records."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta

from django.db import connections, models, router, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from django_idempotency.clock import database_now
from django_idempotency.conf import idempotency_settings
from django_idempotency.keys import MAX_KEY_LENGTH
from django_idempotency.storage.base import Census, Count

#: Column widths, which ``DatabaseStorage`` reports to the engine.
SCOPE_MAX_LENGTH = 255
FINGERPRINT_MAX_LENGTH = 128
#: The width of the ``method`` column, which keeps an ``Origin``'s kind.
METHOD_MAX_LENGTH = 16

#: A record as an operator saw it, (pk, token, state): what a fenced write checks it against.
Seen = tuple[int, str, str]
#: Fenced writes are sent in statements of at most this many records.
_FENCE_CHUNK = 500
#: The fields a log entry's description (``str(record)``) reads.
_LOGGED = ("pk", "scope", "key")
#: Past this many rows a count is the planner's estimate (PostgreSQL) or a lower bound.
COUNT_LIMIT = 10_000


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

    def of_scope(self, scope: str) -> IdempotencyKeyQuerySet:
        """Return the records of one scope (one principal), in every state."""
        return self.filter(scope=scope)

    def delete_batch(
        self, batch_size: int, *, skip_locked: bool = False, flush: bool = True
    ) -> int | None:
        """Delete up to ``batch_size`` of these records in one transaction; ``None`` if none.

        The batch is read first, in this queryset's order, and locked, then deleted by
        primary key under this queryset's own filter again: a record that changed meanwhile
        so it no longer matches (a purge's expired key claimed again) survives. A row a
        request or another delete holds locked is waited for, or with ``skip_locked`` left
        for a later run (where the database can skip locked rows). ``flush=False`` does
        not wait for the WAL flush on PostgreSQL, which shortens the locks where losing the
        last deletes in a server crash does no harm (the purge deletes them again).
        """
        features = connections[self.db].features
        with transaction.atomic(using=self.db):
            if not flush and connections[self.db].vendor == "postgresql":
                with connections[self.db].cursor() as cursor:
                    cursor.execute("SET LOCAL synchronous_commit TO OFF")
            skip = skip_locked and features.has_select_for_update_skip_locked
            candidates = self.select_for_update(skip_locked=skip)
            # Read first, then delete by primary key: as a subquery of the DELETE, PostgreSQL
            # may plan the batch as a subplan re-run per row, each run skipping the rows the
            # DELETE already removed and offering batch_size more, so one batch took the table.
            batch = list(candidates.values_list("pk", flat=True)[:batch_size])
            if not batch:
                return None
            deleted, _ = self.order_by().filter(pk__in=batch).delete()
        # A batch whose every row changed meanwhile deletes none; the next batch goes on.
        return deleted

    def bounded_count(self, limit: int = COUNT_LIMIT) -> Count:
        """Count the records, reading at most ``limit + 1`` of them.

        On PostgreSQL the planner's estimate answers first, from its statistics alone, and
        past ``limit`` it is the answer (``ANALYZE``, which the purge runs, keeps it near);
        asking it first keeps the count's plan to an index, since the planner then expects
        few rows. Otherwise ``COUNT(*)`` over a ``LIMIT`` subquery stops counting early,
        and a count that reached the limit is reported as "at least".
        """
        if connections[self.db].vendor == "postgresql":
            estimate = self.planner_rows()
            if estimate > limit:
                return Count(estimate, "estimate")
        counted = self.order_by()[: limit + 1].count()
        if counted > limit:
            return Count(limit, "at_least")
        return Count(counted)

    def planner_rows(self) -> int:
        """Return PostgreSQL's estimate of how many records this query returns."""
        sql, params = self.order_by().values("pk").query.sql_with_params()
        with connections[self.db].cursor() as cursor:
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if isinstance(plan, str | bytes):
            plan = json.loads(plan)
        return int(plan[0]["Plan"]["Plan Rows"])

    def census(self, now: datetime | None = None) -> Census:
        """Count the records by state and tell the oldest in flight and the oldest expired.

        Every query is served by an index: the counts by ``bounded_count()``, the oldest
        in-flight key from the ``(state, expires_at)`` index (in-flight keys are few), the
        oldest expired record from the first entry of the ``expires_at`` index.
        """
        now = now or database_now(self.db)
        State = IdempotencyKey.State
        finished = [State.COMPLETED, State.NOT_REPLAYABLE]
        live, expired = self.live(now), self.expired(now)
        claimed = self.in_flight().aggregate(first=models.Min("created_at"))["first"]
        expiry = expired.filter(state__in=finished).aggregate(first=models.Min("expires_at"))
        return Census(
            in_flight=live.filter(state=State.IN_FLIGHT).bounded_count(),
            lease_expired=expired.filter(state=State.IN_FLIGHT).bounded_count(),
            completed=live.filter(state=State.COMPLETED).bounded_count(),
            not_replayable=live.filter(state=State.NOT_REPLAYABLE).bounded_count(),
            expired=expired.filter(state__in=finished).bounded_count(),
            oldest_in_flight=_age(claimed, now),
            oldest_expired=_age(expiry["first"], now),
        )

    def as_seen(self) -> list[Seen]:
        """Return each record as seen now, for a fenced write to check it against later."""
        return list(self.values_list("pk", "token", "state"))

    def delete_as_seen(self, seen: Sequence[Seen]) -> list[IdempotencyKey]:
        """Delete the records still exactly as seen; return those deleted."""
        return self._write_as_seen(
            seen,
            lambda records: records.delete(),
            lambda records, locked: locked - set(records.values_list("pk", flat=True)),
        )

    def expire_as_seen(self, seen: Sequence[Seen], now: datetime) -> list[IdempotencyKey]:
        """Expire at ``now`` the live records still exactly as seen; return those expired."""
        # A completion re-checks expires_at > now, so an expired lease cannot complete.
        return self._write_as_seen(
            seen,
            lambda records: records.live(now).update(expires_at=now),
            lambda records, _locked: set(
                records.filter(expires_at=now).values_list("pk", flat=True)
            ),
        )

    def _write_as_seen(
        self,
        seen: Sequence[Seen],
        write: Callable[[IdempotencyKeyQuerySet], object],
        changed: Callable[[IdempotencyKeyQuerySet, set[int]], set[int]],
    ) -> list[IdempotencyKey]:
        """Apply ``write`` to the records still exactly as seen; return the records it changed.

        Each chunk is locked (``SELECT … FOR UPDATE``) before it is written, so a request that
        completes or re-claims a record at that moment either changes it first, and the fence
        then leaves it alone, or waits for the operator's write. ``changed(records, locked_pks)``
        reads back which of the locked records the write changed, so what is reported and logged
        is what happened, also where rows cannot be locked (SQLite).
        """
        done: list[IdempotencyKey] = []
        with transaction.atomic(using=self.db):
            for chunk in self._fenced(seen):
                locked = {record.pk: record for record in chunk.select_for_update().only(*_LOGGED)}
                if not locked:
                    continue
                write(chunk.filter(pk__in=list(locked)))
                hits = changed(self.filter(pk__in=list(locked)), set(locked))
                done.extend(record for pk, record in locked.items() if pk in hits)
        return done

    def _fenced(self, seen: Sequence[Seen]) -> Iterator[IdempotencyKeyQuerySet]:
        """Yield the records still exactly as seen (same token, same state), a chunk at a time."""
        for start in range(0, len(seen), _FENCE_CHUNK):
            fence = models.Q()
            for pk, token, state in seen[start : start + _FENCE_CHUNK]:
                fence |= models.Q(pk=pk, token=token, state=state)
            yield self.filter(fence)


def _age(moment: datetime | None, now: datetime) -> timedelta | None:
    return None if moment is None else max(timedelta(0), now - moment)


def records_database() -> str:
    """Return the alias records are written to: ``IDEMPOTENCY_DATABASE``, else the router's."""
    return idempotency_settings.DATABASE or router.db_for_write(IdempotencyKey)


class IdempotencyKey(models.Model):
    class State(models.TextChoices):
        IN_FLIGHT = "in_flight", _("in flight")
        COMPLETED = "completed", _("completed")
        NOT_REPLAYABLE = "not_replayable", _("not replayable")

    id = models.BigAutoField(primary_key=True)
    scope = models.CharField(_("scope"), max_length=SCOPE_MAX_LENGTH)
    key = models.CharField(_("key"), max_length=MAX_KEY_LENGTH)
    state = models.CharField(_("state"), max_length=16, choices=State.choices)
    fingerprint = models.CharField(_("request fingerprint"), max_length=FINGERPRINT_MAX_LENGTH)
    token = models.CharField(_("fencing token"), max_length=32)
    # What claimed the key (``storage.Origin``): for a request, its method and path.
    method = models.CharField(_("method"), max_length=METHOD_MAX_LENGTH)
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
