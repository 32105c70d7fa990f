"""Delete expired idempotency records in short batches, safe from cron; or erase a principal's."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections

from django_idempotency.clock import database_now
from django_idempotency.conf import idempotency_settings
from django_idempotency.fingerprints import bounded
from django_idempotency.models import COUNT_LIMIT, IdempotencyKey, records_database
from django_idempotency.scopes import credentials_scope, user_scope
from django_idempotency.storage.base import Count, Storage, StorageUnavailable
from django_idempotency.storage.registry import (
    configured_storage,
    configured_storage_class,
    get_storage,
)

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
    started = time.perf_counter()
    # The delete re-checks expiry, so a record claimed, completed or re-claimed since it
    # was chosen has moved its expires_at into the future and survives.
    purgeable = IdempotencyKey.objects.using(using).purgeable(now, grace=grace)
    # Rows a request is re-claiming, or another purge holds, are skipped, not awaited.
    deleted = purgeable.order_by("expires_at").delete_batch(
        batch_size, skip_locked=True, flush=False
    )
    if deleted is None:
        return None
    return BatchResult(deleted, time.perf_counter() - started)


def refresh_statistics(using: str) -> None:
    """Have PostgreSQL re-read the table's statistics, after a purge changed its size.

    The admin's totals and the census's counts past ``COUNT_LIMIT`` are the planner's
    estimates on PostgreSQL; without this they stay at the size before the purge until
    autovacuum comes by. Nothing elsewhere: no other database's estimates are read, and on
    MySQL and MariaDB ``ANALYZE TABLE`` would commit the caller's transaction (InnoDB
    recalculates its statistics itself after a tenth of the table changed).
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return
    table = connection.ops.quote_name(IdempotencyKey._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")


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
            help="Seconds an in-flight key is kept after its lease ended, so operators can "
            f"see stuck keys (default {int(DEFAULT_GRACE.total_seconds())}).",
        )
        erasure = parser.add_argument_group(
            "erasure",
            "Delete every key of one principal instead, expired or not, in every state (an "
            "erasure request). A retry of an erased key runs its view again.",
        )
        erasure.add_argument(
            "--scope",
            action="append",
            dest="scopes",
            default=[],
            metavar="SCOPE",
            help="Erase the keys of this scope, as the scope function returns it "
            '("user:auth.user:42" with the default one). Repeat for more scopes.',
        )
        erasure.add_argument(
            "--user",
            action="append",
            dest="users",
            default=[],
            metavar="PK",
            help="Erase the keys of the AUTH_USER_MODEL user with this primary key, under the "
            "default scope function. Repeat for more users.",
        )
        erasure.add_argument(
            "--credentials",
            action="append",
            default=[],
            metavar="AUTHORIZATION",
            help="Erase the keys of requests that sent this Authorization header to views that "
            'did not authenticate it themselves ("Token 9944b0..."), under the default scope '
            "function. Repeat for more.",
        )
        erasure.add_argument(
            "--storage",
            metavar="DOTTED_PATH",
            help="Erase in this storage instead of IDEMPOTENCY_STORAGE's: a view's own "
            "storage option. Run once per storage your views use.",
        )
        erasure.add_argument(
            "--no-input",
            "--noinput",
            action="store_false",
            dest="interactive",
            help="Erase without asking first (asked on a terminal, refused elsewhere).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        verbosity: int = options["verbosity"]
        batch_size: int = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        scopes = self.scopes_to_erase(options["scopes"], options["users"], options["credentials"])
        if scopes and options["users"] and verbosity >= 1:
            self.stdout.write(
                "Note: --user finds the keys stored under the user's scope. Requests of the "
                "user that views did not authenticate are scoped by their credentials or "
                "session instead: name those with --credentials or --scope (docs/purge.md)."
            )
        if options["storage"] is not None and not scopes:
            raise CommandError(
                "--storage applies to erasure: name a --user, --credentials or --scope."
            )
        if scopes:
            if options["grace"] is not None:
                raise CommandError("--grace applies to the purge of expired keys, not to erasure.")
            self.erase_scopes(
                scopes,
                storage=self.erasure_storage(options["database"], options["storage"]),
                dry_run=options["dry_run"],
                interactive=options["interactive"],
                batch_size=batch_size,
                verbosity=verbosity,
            )
            return
        if options["grace"] is None:
            options["grace"] = DEFAULT_GRACE.total_seconds()
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

    def scopes_to_erase(
        self, scopes: list[str], users: list[str], credentials: list[str]
    ) -> list[str]:
        """Return the scopes ``--scope``, ``--user`` and ``--credentials`` name, each once."""
        if any(not scope for scope in scopes):
            raise CommandError("--scope must not be empty.")
        if any(not header for header in credentials):
            raise CommandError("--credentials must not be empty.")
        named = list(scopes)
        named += [credentials_scope(header) for header in credentials]
        for pk in users:
            try:
                named.append(user_scope(pk))
            except ValidationError as problem:
                raise CommandError(f"--user {pk!r}: {' '.join(problem.messages)}") from problem
        return list(dict.fromkeys(named))

    def erasure_storage(self, database: str | None, path: str | None) -> Storage:
        """Return the storage an erasure deletes from: ``--storage``, else the setting's."""
        if path is not None and database is not None:
            raise CommandError("--storage and --database name the storage twice: pass one.")
        try:
            storage = (
                configured_storage() if path is None else get_storage(path, source="--storage")
            )
        except ImproperlyConfigured as problem:
            raise CommandError(str(problem)) from problem
        if database is None:
            return storage
        from django_idempotency.storage.database import DatabaseStorage

        if not isinstance(storage, DatabaseStorage):
            raise CommandError(
                f"--database applies to DatabaseStorage; IDEMPOTENCY_STORAGE is "
                f"{idempotency_settings.STORAGE}."
            )
        if database not in connections:
            raise CommandError(f"Unknown database {database!r}.")
        return DatabaseStorage(database)

    def erase_scopes(
        self,
        scopes: list[str],
        *,
        storage: Storage,
        dry_run: bool,
        interactive: bool,
        batch_size: int,
        verbosity: int,
    ) -> None:
        """Delete every record of each scope, after saying how many and asking, where asked."""
        # The engine stores a scope longer than the storage keeps as its digest.
        stored = {scope: bounded(scope, storage.max_scope_length) for scope in scopes}
        try:
            if dry_run or interactive:
                for scope in scopes:
                    count = storage.count_scope(stored[scope])
                    self.stdout.write(
                        f"{'Dry run: would erase' if dry_run else 'Found'} {count} idempotency "
                        f"key(s) of scope {scope!r}, in every state."
                    )
            if dry_run:
                return
            if interactive:
                self.confirm_erasure()
            for scope in scopes:
                erased = 0
                batches = storage.erase_scope(stored[scope], batch_size=batch_size)
                for batch, deleted in enumerate(batches, start=1):
                    erased += deleted
                    if verbosity >= 2:
                        self.stdout.write(f"Batch {batch}: erased {deleted}.")
                if verbosity >= 1:
                    self.stdout.write(
                        self.style.SUCCESS(
                            f"Erased {erased} idempotency key(s) of scope {scope!r}."
                        )
                    )
        except NotImplementedError as problem:
            raise CommandError(str(problem)) from problem
        except StorageUnavailable as problem:
            raise CommandError(f"Erasing idempotency keys failed: {problem}.") from problem

    def confirm_erasure(self) -> None:
        """Ask on a terminal; refuse where nobody can answer (cron, a pipe)."""
        if not self.stdin_is_terminal():
            raise CommandError(
                "Erasure asks before it deletes; pass --no-input to erase without asking."
            )
        answer = input(
            "A retry of an erased completed key runs its view again (a payment is made again),\n"
            "and a request still running on an erased key cannot store its response.\n"
            "Type 'yes' to erase: "
        )
        if answer.strip().lower() != "yes":
            raise CommandError("Erasure cancelled; nothing was deleted.")

    def stdin_is_terminal(self) -> bool:
        return sys.stdin.isatty()

    def is_database_storage(self) -> bool:
        """Whether the configured storage, or one of a move's two, keeps rows in the model."""
        from django_idempotency.storage.database import DatabaseStorage
        from django_idempotency.storage.moving import MovingStorage

        try:
            storage_class = configured_storage_class()
            if not issubclass(storage_class, MovingStorage):
                return issubclass(storage_class, DatabaseStorage)
            moving = configured_storage()
        except ImproperlyConfigured as problem:
            raise CommandError(str(problem)) from problem
        assert isinstance(moving, MovingStorage)
        parts = (moving.old_storage, moving.new_storage)
        return any(isinstance(part, DatabaseStorage) for part in parts)

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
