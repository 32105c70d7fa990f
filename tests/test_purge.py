"""The purge_idempotency_keys command: what it deletes, what it never deletes, how it reports."""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_idempotency import models
from django_idempotency.management.commands import purge_idempotency_keys
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage.base import Claim, StorageUnavailable, StoredResponse
from django_idempotency.storage.database import DatabaseStorage
from django_idempotency.testing import close_thread_connections
from tests.factories import IdempotencyKeyFactory

State = IdempotencyKey.State


def purge(*args: str) -> str:
    out = StringIO()
    call_command("purge_idempotency_keys", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def remaining_keys() -> set[str]:
    return set(IdempotencyKey.objects.values_list("key", flat=True))


@pytest.fixture
def mixed_records() -> dict[str, IdempotencyKey]:
    """One record of each kind the purge must tell apart."""
    now = timezone.now()
    return {
        "expired_completed": IdempotencyKeyFactory.create(key="expired-completed", expired=True),
        "expired_not_replayable": IdempotencyKeyFactory.create(
            key="expired-not-replayable", expired=True, state=State.NOT_REPLAYABLE
        ),
        "stuck_in_flight": IdempotencyKeyFactory.create(
            key="stuck-in-flight", in_flight=True, expires_at=now - timedelta(hours=2)
        ),
        "recent_in_flight": IdempotencyKeyFactory.create(
            key="recent-in-flight", in_flight=True, expires_at=now - timedelta(minutes=10)
        ),
        "live_in_flight": IdempotencyKeyFactory.create(key="live-in-flight", in_flight=True),
        "live_completed": IdempotencyKeyFactory.create(key="live-completed"),
    }


@pytest.mark.django_db
def test_purge__deletes_expired_and_stuck_keeps_live_and_recent(
    mixed_records: dict[str, IdempotencyKey],
) -> None:
    out = purge()

    assert remaining_keys() == {"recent-in-flight", "live-in-flight", "live-completed"}
    assert "Deleted 3 idempotency key(s) in 1 batch(es)" in out


@pytest.mark.django_db
def test_purge__grace_zero_deletes_in_flight_right_after_lease(
    mixed_records: dict[str, IdempotencyKey],
) -> None:
    purge("--grace", "0")

    assert remaining_keys() == {"live-in-flight", "live-completed"}


@pytest.mark.django_db
def test_purge__longer_grace_keeps_stuck_in_flight(
    mixed_records: dict[str, IdempotencyKey],
) -> None:
    purge("--grace", str(3 * 3600))

    assert remaining_keys() == {
        "stuck-in-flight",
        "recent-in-flight",
        "live-in-flight",
        "live-completed",
    }


@pytest.mark.django_db
def test_purge__dry_run_counts_and_deletes_nothing(
    mixed_records: dict[str, IdempotencyKey],
) -> None:
    out = purge("--dry-run")

    assert IdempotencyKey.objects.count() == len(mixed_records)
    assert "would delete 3 idempotency key(s) (2 expired, 1 in flight" in out


@pytest.mark.django_db
def test_purge__verbosity_0_prints_nothing(settings: Any) -> None:
    IdempotencyKeyFactory.create(expired=True)

    assert purge("--dry-run", "--verbosity", "0") == ""
    settings.IDEMPOTENCY_STORAGE = "django_idempotency.storage.CacheStorage"
    assert purge("--verbosity", "0") == ""


@pytest.mark.django_db
def test_purge__deletes_in_batches_of_batch_size() -> None:
    IdempotencyKeyFactory.create_batch(7, expired=True)
    IdempotencyKeyFactory.create(key="live")

    out = purge("--batch-size", "3", "--verbosity", "2")

    assert re.findall(r"Batch \d+: deleted (\d+)", out) == ["3", "3", "1"]
    assert "Deleted 7 idempotency key(s) in 3 batch(es)" in out
    assert remaining_keys() == {"live"}


@pytest.mark.django_db
def test_purge__each_batch_is_its_own_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    IdempotencyKeyFactory.create_batch(5, expired=True)
    entered: list[str] = []
    real_atomic = transaction.atomic

    def recording_atomic(using: str | None = None, **kwargs: Any) -> Any:
        entered.append(str(using))
        return real_atomic(using=using, **kwargs)

    monkeypatch.setattr(models, "transaction", SimpleNamespace(atomic=recording_atomic))
    purge("--batch-size", "2")

    # Three batches that delete, and a fourth that finds nothing left.
    assert entered == ["default"] * 4


@pytest.mark.django_db
def test_purge__verbosity_zero_prints_nothing() -> None:
    IdempotencyKeyFactory.create(expired=True)

    assert purge("--verbosity", "0") == ""
    assert IdempotencyKey.objects.count() == 0


@pytest.mark.django_db
def test_purge__nothing_to_do_says_so() -> None:
    IdempotencyKeyFactory.create()

    assert "Deleted 0 idempotency key(s) in 0 batch(es)" in purge()


@pytest.mark.django_db
def test_purge__database_option_selects_the_alias() -> None:
    IdempotencyKeyFactory.create(expired=True)

    purge("--database", "default")

    assert IdempotencyKey.objects.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--batch-size", "0"), "--batch-size must be at least 1."),
        (("--grace", "-1"), "--grace must not be negative."),
        (("--database", "nope"), "Unknown database 'nope'."),
    ],
)
def test_purge__bad_options_fail(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        purge(*args)


@pytest.mark.django_db
def test_purge__database_failure_is_a_command_error(monkeypatch: pytest.MonkeyPatch) -> None:
    IdempotencyKeyFactory.create(expired=True)

    def broken_batch(*args: object, **kwargs: object) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(purge_idempotency_keys, "purge_batch", broken_batch)

    with pytest.raises(CommandError, match="Purging idempotency keys failed: OperationalError"):
        purge()


@pytest.mark.django_db
def test_purge__failure_exits_non_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_batch(*args: object, **kwargs: object) -> None:
        raise OperationalError("boom")

    monkeypatch.setattr(purge_idempotency_keys, "purge_batch", broken_batch)
    command = purge_idempotency_keys.Command(stdout=StringIO(), stderr=StringIO())

    with pytest.raises(SystemExit) as exited:
        command.run_from_argv(["manage.py", "purge_idempotency_keys"])

    assert exited.value.code == 1


@pytest.mark.django_db
def test_purge__cache_storage_deletes_nothing_and_says_why() -> None:
    IdempotencyKeyFactory.create(expired=True)

    with override_settings(IDEMPOTENCY_STORAGE="django_idempotency.storage.CacheStorage"):
        out = purge()

    assert "Redis TTLs" in out
    assert "Nothing to purge." in out
    assert IdempotencyKey.objects.count() == 1


def test_purge__unimportable_storage_fails() -> None:
    with (
        override_settings(IDEMPOTENCY_STORAGE="nowhere.Storage"),
        pytest.raises(CommandError, match="cannot be imported"),
    ):
        purge()


@pytest.fixture
def on_delete(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Run a callback between the purge's SELECT of a batch and its DELETE.

    PostgreSQL and SQLite select and delete in one statement; this takes the two-statement
    path (used where a DELETE cannot select from its own table) to open the window.
    """
    monkeypatch.setattr(connection.features, "update_can_self_select", False)
    callbacks: list[Callable[[], None]] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("DELETE") and callbacks:
            callbacks.pop()()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield callbacks.append


@pytest.mark.django_db
def test_purge__record_reclaimed_after_selection_survives(
    on_delete: Callable[[Callable[[], None]], None],
) -> None:
    reclaimed = IdempotencyKeyFactory.create(key="reclaimed", expired=True)
    IdempotencyKeyFactory.create(key="stale", expired=True)
    storage = DatabaseStorage()

    def reclaim() -> None:
        # Exactly what a request taking over the dead record writes: new token, new lease.
        claim = storage.claim(reclaimed.scope, reclaimed.key, "f" * 64, lease=timedelta(seconds=60))
        assert isinstance(claim, Claim)

    on_delete(reclaim)
    purge()

    survivor = IdempotencyKey.objects.get()
    assert survivor.key == "reclaimed"
    assert survivor.state == State.IN_FLIGHT
    assert survivor.token != reclaimed.token


@pytest.mark.django_db
def test_purge__record_completed_after_selection_survives(
    on_delete: Callable[[Callable[[], None]], None],
) -> None:
    record = IdempotencyKeyFactory.create(
        key="completing",
        in_flight=True,
        expires_at=timezone.now() - timedelta(hours=2),
    )

    def complete() -> None:
        # A completion moves expires_at forward; the purge's own re-check must then miss it.
        IdempotencyKey.objects.filter(pk=record.pk).update(
            state=State.COMPLETED, expires_at=timezone.now() + timedelta(hours=24)
        )

    on_delete(complete)
    purge()

    assert IdempotencyKey.objects.get().state == State.COMPLETED


def _in_thread(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)
        finally:
            close_thread_connections()

    return threading.Thread(target=run)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_purge__concurrent_traffic_never_loses_a_live_record() -> None:
    past = timezone.now() - timedelta(days=2)
    IdempotencyKey.objects.bulk_create(
        IdempotencyKeyFactory.build(key=f"old-{i}", created_at=past, expires_at=past)
        for i in range(1500)
    )
    storage = DatabaseStorage()
    owned: dict[str, str] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    stop = threading.Event()

    def traffic(worker: int) -> None:
        # Re-claim old keys (taking over expired records) and claim new ones, then complete.
        i = 0
        while not stop.is_set() and i < 400:
            key = f"old-{(worker * 400 + i) % 1500}" if i % 2 else f"new-{worker}-{i}"
            i += 1
            try:
                claim = storage.claim("user:1", key, "f" * 64, lease=timedelta(seconds=60))
            except StorageUnavailable:
                continue
            if not isinstance(claim, Claim):
                continue
            storage.complete(claim, StoredResponse(201, body=b"ok"), ttl=timedelta(hours=1))
            with lock:
                owned[key] = claim.token

    purge_outputs: list[str] = []

    def purger() -> None:
        for _ in range(3):
            purge_outputs.append(purge("--batch-size", "25", "--grace", "0"))

    threads = [_in_thread(functools.partial(traffic, w), errors) for w in range(3)]
    threads += [_in_thread(purger, errors) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    stop.set()

    assert not errors, errors
    assert len(purge_outputs) == 6
    assert len(owned) > 100
    survivors = dict(IdempotencyKey.objects.values_list("key", "token"))
    # Every completed claim is still there, with the token of the request that completed it.
    assert {key: survivors.get(key) for key in owned} == owned
    assert not IdempotencyKey.objects.filter(expires_at__lte=timezone.now()).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_purge__two_purges_at_once_share_the_work() -> None:
    past = timezone.now() - timedelta(days=2)
    IdempotencyKey.objects.bulk_create(
        IdempotencyKeyFactory.build(created_at=past, expires_at=past) for _ in range(3000)
    )
    live = IdempotencyKeyFactory.create(key="live")
    outputs: list[str] = []
    errors: list[BaseException] = []
    threads = [
        _in_thread(lambda: outputs.append(purge("--batch-size", "50")), errors) for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    deleted = [int(re.search(r"Deleted (\d+)", out).group(1)) for out in outputs]  # type: ignore[union-attr]
    assert sum(deleted) == 3000
    assert list(IdempotencyKey.objects.values_list("pk", flat=True)) == [live.pk]


@pytest.mark.postgres
@pytest.mark.django_db
def test_purge__does_not_wait_for_the_wal_flush_on_postgresql() -> None:
    IdempotencyKeyFactory.create_batch(3, expired=True)

    with CaptureQueriesContext(connection) as queries:
        purge("--batch-size", "2")

    statements = [q["sql"] for q in queries.captured_queries]
    # Every batch, including the last that finds nothing, relaxes only its own transaction.
    assert statements.count("SET LOCAL synchronous_commit TO OFF") == 3
    deletes = [i for i, sql in enumerate(statements) if sql.startswith("DELETE")]
    # Each DELETE follows its batch's SELECT, in the transaction the SET LOCAL opened.
    assert len(deletes) == 2
    assert all(statements[i - 2] == "SET LOCAL synchronous_commit TO OFF" for i in deletes)


@pytest.mark.django_db
def test_purge__dry_run_counts_no_further_than_the_limit(
    mixed_records: dict[str, IdempotencyKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(purge_idempotency_keys, "COUNT_LIMIT", 1)
    with CaptureQueriesContext(connection) as queries:
        out = purge("--dry-run")

    # Two expired records, one counted: the count stopped at the limit and says so.
    assert "would delete at least 2 idempotency key(s)" in out or "about" in out, out
    assert "at least 1 expired" in out or "about" in out, out
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts
    assert all("LIMIT 2" in sql for sql in counts), counts


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.django_db
def test_purge__on_a_terminal_shows_progress_after_every_batch() -> None:
    IdempotencyKeyFactory.create_batch(5, expired=True)
    out = Terminal()

    call_command("purge_idempotency_keys", "--batch-size", "2", stdout=out, stderr=StringIO())

    text = out.getvalue()
    assert [line for line in text.split("\r") if line] == [
        line for line in text.split("\r") if line.startswith("Deleted")
    ]
    assert "Deleted 2 so far" in text
    assert "Deleted 4 so far" in text
    assert "rows/s, 3 batch(es)..." in text
    assert text.rstrip("\n").splitlines()[-1].startswith("Deleted 5 idempotency key(s) in 3")


@pytest.mark.django_db
def test_purge__in_cron_writes_one_summary_line() -> None:
    IdempotencyKeyFactory.create_batch(5, expired=True)

    out = purge("--batch-size", "2")

    assert out.count("\n") == 1
    assert "\r" not in out
    assert out.startswith("Deleted 5 idempotency key(s) in 3 batch(es)")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_purge__refreshes_the_planners_statistics_on_postgres() -> None:
    IdempotencyKeyFactory.create_batch(20, expired=True)
    IdempotencyKeyFactory.create(key="live")
    table = IdempotencyKey._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")

    purge()

    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [table])
        (rows,) = cursor.fetchone()
    # The statistics say what the table holds after the purge, not the 21 rows before it.
    assert rows == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_purge__never_deletes_more_than_a_batch_whatever_the_plan() -> None:
    # Statistics of an empty table (as after a purge's ANALYZE) make PostgreSQL plan the
    # batch's "IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)" as a subquery it re-runs for
    # each row: every re-run skips the rows the DELETE already removed and offers n more.
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {IdempotencyKey._meta.db_table}")
    IdempotencyKeyFactory.create_batch(5, expired=True)

    out = purge("--batch-size", "2", "--verbosity", "2")

    assert re.findall(r"Batch \d+: deleted (\d+)", out) == ["2", "2", "1"], out
