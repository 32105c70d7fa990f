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
from django_idempotency.models import COUNT_LIMIT, IdempotencyKey, records_database
from django_idempotency.storage.base import Count
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
        # Read first, then delete by primary key: as a subquery of the DELETE, PostgreSQL may
        # plan the batch as a subplan re-run per row, each run skipping the rows the DELETE
        # already removed and offering batch_size more, so one batch took the whole table.
        batch = list(candidates.values_list("pk", flat=True)[:batch_size])
        if not batch:
            return None
        # One statement; its own WHERE re-checks expiry, so a record claimed, completed or
        # re-claimed since it was chosen has moved its expires_at into the future and survives.
        deleted, _ = records.purgeable(now, grace=grace).filter(pk__in=batch).delete()
    # A batch whose every row was re-claimed meanwhile deletes none; the next batch goes on.
    return BatchResult(deleted, time.perf_counter() - started)


def refresh_statistics(using: str) -> None:
    """Have the database re-read the table's statistics, after a purge changed its size.

    The admin's totals and the census's counts past ``COUNT_LIMIT`` are the planner's
    estimates on PostgreSQL; without this they stay at the size before the purge until
    autovacuum comes by. MySQL and MariaDB re-read their index statistics likewise.
    """
    connection = connections[using]
    table = connection.ops.quote_name(IdempotencyKey._meta.db_table)
    statement = {"postgresql": "ANALYZE {}", "mysql": "ANALYZE TABLE {}"}.get(connection.vendor)
    if statement is None:
        return
    with connection.cursor() as cursor:
        cursor.execute(statement.format(table))
        if connection.vendor == "mysql":
            cursor.fetchall()  # ANALYZE TABLE answers with a result set


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
        """Say what a purge would delete, by state, counting at most ``COUNT_LIMIT`` of each."""
        purgeable = IdempotencyKey.objects.using(using).purgeable(now, grace=grace)
        in_flight = purgeable.in_flight().bounded_count(COUNT_LIMIT)
        finished = purgeable.exclude(state=IdempotencyKey.State.IN_FLIGHT).bounded_count(
            COUNT_LIMIT
        )
        exact = in_flight.is_exact and finished.is_exact
        total = Count(in_flight.value + finished.value, "exact" if exact else "at_least")
        if verbosity >= 1:
            self.stdout.write(
                f"Dry run: would delete {total} idempotency key(s) "
                f"({finished} expired, {in_flight} in flight past their "
                f"lease by more than {grace.total_seconds():g}s)."
            )

    def purge(
        self, using: str, *, now: datetime, grace: timedelta, batch_size: int, verbosity: int
    ) -> None:
        """Delete purgeable records batch by batch until none are left.

        On a terminal, one line of progress is rewritten after every batch; in cron (no
        terminal) only the summary is written, and ``--verbosity 2`` writes every batch.
        """
        total = batches = 0
        longest = 0.0
        started = time.perf_counter()
        progress = verbosity == 1 and self.stdout.isatty()
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
            elif progress:
                rate = total / max(time.perf_counter() - started, 1e-6)
                self.stdout.write(
                    f"\rDeleted {total} so far, {rate:,.0f} rows/s, {batches} batch(es)...",
                    ending="",
                )
                self.stdout.flush()
        if total:
            refresh_statistics(using)
        if verbosity >= 1:
            elapsed = time.perf_counter() - started
            self.stdout.write(
                ("\n" if progress and batches else "")
                + self.style.SUCCESS(
                    f"Deleted {total} idempotency key(s) in {batches} batch(es), "
                    f"{elapsed:.1f}s (longest batch {longest * 1000:.0f} ms)."
                )
            )
