"""Delete expired idempotency records in short batches, safe to run from cron during traffic."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections, transaction

from django_idempotency.clock import database_now
from django_idempotency.conf import idempotency_settings
from django_idempotency.models import IdempotencyKey, records_database
from django_idempotency.storage.registry import configured_storage_class

#: How long after its lease ended an in-flight record is kept for operators to inspect.
DEFAULT_GRACE = timedelta(hours=1)
DEFAULT_BATCH_SIZE = 2500


@dataclass
class BatchResult:
    """What one batch's transaction did and how long it held its locks."""

    deleted: int
    seconds: float


def purge_batch(
    using: str, *, now: datetime, grace: timedelta, batch_size: int
) -> BatchResult | None:
    """Delete one batch of purgeable records in its own transaction; None when none are left."""
    records = IdempotencyKey.objects.using(using)
    features = connections[using].features
    started = time.perf_counter()
    with transaction.atomic(using=using):
        if connections[using].vendor == "postgresql":
            # Losing the last deletes in a server crash only brings back expired rows, which
            # the next run deletes again; not waiting for the WAL flush shortens each lock.
            with connections[using].cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        candidates = records.purgeable(now, grace=grace).order_by("expires_at")
        if features.has_select_for_update_skip_locked:
            # Rows a request is re-claiming, or another purge holds, are skipped, not awaited.
            candidates = candidates.select_for_update(skip_locked=True)
        batch: Any = candidates.values("pk")[:batch_size]
        if not features.update_can_self_select:
            batch = list(batch.values_list("pk", flat=True))
        # One statement; its own WHERE re-checks expiry, so a record claimed, completed or
        # re-claimed since it was chosen has moved its expires_at into the future and survives.
        deleted, _ = records.purgeable(now, grace=grace).filter(pk__in=batch).delete()
    if not deleted:
        return None
    return BatchResult(deleted, time.perf_counter() - started)


class Command(BaseCommand):
    help = (
        "Delete expired idempotency keys, and in-flight keys whose lease ended more than "
        "--grace seconds ago, in short batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be deleted and delete nothing.",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"Rows deleted per transaction (default {DEFAULT_BATCH_SIZE}).",
        )
        parser.add_argument(
            "--database",
            help="Database alias holding the records (default: IDEMPOTENCY_DATABASE, or the "
            "router's choice for writes).",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=DEFAULT_GRACE.total_seconds(),
            help="Seconds an in-flight key is kept after its lease ended, so operators can "
            f"see stuck keys (default {int(DEFAULT_GRACE.total_seconds())}).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity: int = options["verbosity"]
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        if options["grace"] < 0:
            raise CommandError("--grace must not be negative.")
        grace = timedelta(seconds=options["grace"])

        if not self.is_database_storage():
            if verbosity >= 1:
                self.stdout.write(
                    f"IDEMPOTENCY_STORAGE is {idempotency_settings.STORAGE}, which does not keep "
                    "records in the database: its keys expire on their own (Redis TTLs for "
                    "CacheStorage). Nothing to purge."
                )
            return

        using = options["database"] or records_database()
        if using not in connections:
            raise CommandError(f"Unknown database {using!r}.")
        try:
            now = database_now(using)
            if options["dry_run"]:
                self.report_dry_run(using, now=now, grace=grace, verbosity=verbosity)
            else:
                self.purge(using, now=now, grace=grace, batch_size=batch_size, verbosity=verbosity)
        except DatabaseError as exc:
            raise CommandError(
                f"Purging idempotency keys failed: {exc.__class__.__name__}."
            ) from exc

    def is_database_storage(self) -> bool:
        """Return whether the configured storage keeps its records in the model."""
        from django_idempotency.storage.database import DatabaseStorage

        try:
            return issubclass(configured_storage_class(), DatabaseStorage)
        except ImproperlyConfigured as problem:
            raise CommandError(str(problem)) from problem

    def report_dry_run(
        self, using: str, *, now: datetime, grace: timedelta, verbosity: int
    ) -> None:
        """Count the records a purge would delete, by state."""
        purgeable = IdempotencyKey.objects.using(using).purgeable(now, grace=grace)
        in_flight = purgeable.in_flight().count()
        total = purgeable.count()
        if verbosity >= 1:
            self.stdout.write(
                f"Dry run: would delete {total} idempotency key(s) "
                f"({total - in_flight} expired, {in_flight} in flight past their lease "
                f"by more than {grace.total_seconds():g}s)."
            )

    def purge(
        self, using: str, *, now: datetime, grace: timedelta, batch_size: int, verbosity: int
    ) -> None:
        """Delete purgeable records batch by batch until none are left."""
        total = batches = 0
        longest = 0.0
        started = time.perf_counter()
        while (
            batch := purge_batch(using, now=now, grace=grace, batch_size=batch_size)
        ) is not None:
            total += batch.deleted
            batches += 1
            longest = max(longest, batch.seconds)
            if verbosity >= 2:
                self.stdout.write(
                    f"Batch {batches}: deleted {batch.deleted} in {batch.seconds * 1000:.0f} ms."
                )
        if verbosity >= 1:
            elapsed = time.perf_counter() - started
            self.stdout.write(
                self.style.SUCCESS(
                    f"Deleted {total} idempotency key(s) in {batches} batch(es), "
                    f"{elapsed:.1f}s (longest batch {longest * 1000:.0f} ms)."
                )
            )
