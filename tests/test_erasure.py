"""Erasing one principal's keys (``purge_idempotency_keys --scope/--user``), on each storage.

Through every entry point: the keys a signed-in caller made are gone, in every state, while
another caller's stay; the caller's retry then runs as a new request.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import SESSION_KEY
from django.core.management import CommandError, call_command
from django.db import transaction
from django.test import Client

from django_idempotency.management.commands.purge_idempotency_keys import Command
from django_idempotency.models import IdempotencyKey
from django_idempotency.scopes import user_scope
from django_idempotency.storage.base import ERASE_BATCH_SIZE, StorageUnavailable, StoredResponse
from django_idempotency.storage.database import DatabaseStorage
from django_idempotency.storage.registry import configured_storage, get_storage
from django_idempotency.testing import close_thread_connections
from tests.factories import UserFactory
from tests.pg_locks import statements_waiting_on_a_lock
from tests.records import stored_records
from tests.test_behaviour import (  # noqa: F401  (fixtures)
    DATABASE_STORAGE_ONLY,
    Caller,
    claim_in_flight,
    client,
    entry_point,
    executions,
    scope_of,
    send,
    storage,
    url,
)

pytestmark = pytest.mark.django_db(transaction=True)

CACHE = "django_idempotency.storage.CacheStorage"
#: How long a thread of the lock test may take, far past what it needs.
JOIN_SECONDS = 30


def erase(*arguments: str) -> str:
    out = StringIO()
    call_command("purge_idempotency_keys", *arguments, stdout=out)
    return out.getvalue()


def user_pk(caller: Caller) -> str:
    return str(caller.session[SESSION_KEY])


@pytest.fixture
def other() -> Client:
    """A second signed-in caller, whose keys an erasure of the first must leave alone."""
    caller = Client(raise_request_exception=False)
    caller.force_login(UserFactory.create())
    return caller


def test_erase__deletes_the_principals_keys_in_every_state_and_no_one_elses(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    other: Client,
) -> None:
    send(client, url, {"label": "pay"}, key="paid")
    claim_in_flight(client, url, {"label": "ship"}, "running", timedelta(minutes=5))
    send(other, "/drf/required/", {"label": "pay"}, key="paid")

    out = erase("--user", user_pk(client), "--no-input")

    assert f"Erased 2 idempotency key(s) of scope {scope_of(client)!r}." in out
    assert stored_records() == [(scope_of(other), "paid", "completed")]


def test_erase__a_retry_of_an_erased_key_runs_as_new(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    send(client, url, {"label": "pay"}, key="paid")
    erase("--scope", scope_of(client), "--no-input")

    retried = send(client, url, {"label": "pay"}, key="paid")

    assert retried.status_code == 201
    assert "Idempotent-Replayed" not in retried.headers
    assert executions("pay") == 2


def test_erase__dry_run_counts_and_deletes_nothing(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    send(client, url, {"label": "one"}, key="one")
    send(client, url, {"label": "two"}, key="two")

    out = erase("--user", user_pk(client), "--dry-run")

    assert f"Dry run: would erase 2 idempotency key(s) of scope {scope_of(client)!r}" in out
    assert len(stored_records()) == 2


def test_erase__deletes_in_batches_of_batch_size(client: Caller) -> None:  # noqa: F811
    scope = scope_of(client)
    for number in range(5):
        claim_in_flight(client, "/plain/behave/", {}, f"k{number}", timedelta(minutes=5))

    out = erase("--scope", scope, "--no-input", "--batch-size", "2", "--verbosity", "2")

    # Redis's SCAN decides how many names a page holds; each batch stays within the size.
    batches = [
        int(line.rsplit(" ", 1)[1].rstrip(".")) for line in out.splitlines() if "Batch" in line
    ]
    assert sum(batches) == 5
    assert all(0 < batch <= 2 for batch in batches)
    assert stored_records() == []


def test_erase__a_scope_longer_than_the_storage_keeps_is_found_by_its_digest(
    client: Caller,  # noqa: F811
    settings: Any,
) -> None:
    long_scope = "tenant:" + "x" * 300
    settings.IDEMPOTENCY_SCOPE = "tests.test_erasure.long_scope"
    send(client, "/plain/behave/", {"label": "pay"}, key="paid")
    assert len(stored_records()) == 1

    out = erase("--scope", long_scope, "--no-input")

    assert "Erased 1 idempotency key(s)" in out
    assert stored_records() == []


def long_scope(request: object) -> str:
    return "tenant:" + "x" * 300


# Asked first


def test_erase__asks_on_a_terminal_and_deletes_on_yes(
    client: Caller,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send(client, "/plain/behave/", {"label": "pay"}, key="paid")
    monkeypatch.setattr(Command, "stdin_is_terminal", lambda self: True)
    asked: list[str] = []

    def answer(prompt: str) -> str:
        asked.append(prompt)
        return "yes"

    monkeypatch.setattr("builtins.input", answer)

    out = erase("--user", user_pk(client))

    assert "runs its view again" in asked[0]
    assert "Found 1 idempotency key(s)" in out
    assert stored_records() == []


def test_erase__any_other_answer_deletes_nothing(
    client: Caller,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send(client, "/plain/behave/", {"label": "pay"}, key="paid")
    monkeypatch.setattr(Command, "stdin_is_terminal", lambda self: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")

    with pytest.raises(CommandError, match="cancelled; nothing was deleted"):
        erase("--user", user_pk(client))
    assert len(stored_records()) == 1


def test_erase__without_a_terminal_needs_no_input(client: Caller) -> None:  # noqa: F811
    # Cron and pipes cannot answer; the command says what to pass instead of hanging.
    send(client, "/plain/behave/", {"label": "pay"}, key="paid")

    with pytest.raises(CommandError, match="pass --no-input"):
        erase("--user", user_pk(client))
    assert len(stored_records()) == 1


# Refused where written


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--user", "not-a-number"], "--user 'not-a-number'"),
        (["--scope", ""], "--scope must not be empty"),
        (["--scope", "user:auth.user:1", "--grace", "10"], "--grace applies to the purge"),
        (["--storage", "django_idempotency.storage.DatabaseStorage"], "--storage applies to"),
        (["--scope", "s", "--storage", "no.such.Storage"], "--storage is 'no.such.Storage'"),
        (["--scope", "s", "--storage", "x.Y", "--database", "default"], "name the storage twice"),
        (["--credentials", ""], "--credentials must not be empty"),
    ],
)
def test_erase__bad_arguments_are_refused(arguments: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        erase(*arguments, "--no-input")


class Uncountable(DatabaseStorage):
    """A project's storage that cannot count or erase a scope's records."""

    def count_scope(self, scope: str) -> Any:
        raise NotImplementedError("Uncountable cannot count a scope's records.")


@DATABASE_STORAGE_ONLY
def test_erase__database_names_a_database_of_database_storage_only(
    storage_backend: str, settings: Any
) -> None:
    assert "Erased 0" in erase("--scope", "user:auth.user:9", "--database", "default", "--no-input")
    with pytest.raises(CommandError, match="Unknown database 'nowhere'"):
        erase("--scope", "user:auth.user:9", "--database", "nowhere", "--no-input")

    settings.IDEMPOTENCY_STORAGE = CACHE
    with pytest.raises(CommandError, match="--database applies to DatabaseStorage"):
        erase("--scope", "user:auth.user:9", "--database", "default", "--no-input")


@DATABASE_STORAGE_ONLY
def test_erase__a_storage_that_cannot_count_is_a_command_error(storage_backend: str) -> None:
    with pytest.raises(CommandError, match="cannot count"):
        erase("--scope", "s", "--storage", "tests.test_erasure.Uncountable", "--dry-run")


@DATABASE_STORAGE_ONLY
@pytest.mark.parametrize(("verb", "dry_run"), [("DELETE", []), ("SELECT", ["--dry-run"])])
def test_erase__a_database_that_stops_answering_is_a_command_error(
    storage_backend: str, verb: str, dry_run: list[str]
) -> None:
    from tests.factories import IdempotencyKeyFactory
    from tests.store_faults import failing_queries, on_the_table

    IdempotencyKeyFactory.create(scope="user:auth.user:9", key="k")
    with failing_queries(on_the_table(verb)), pytest.raises(CommandError, match="failed"):
        erase("--scope", "user:auth.user:9", *dry_run, "--no-input")
    assert IdempotencyKey.objects.count() == 1


def test_erase__a_store_that_does_not_answer_is_a_command_error(
    client: Caller,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = configured_storage()

    def unavailable(scope: str, *, batch_size: int = ERASE_BATCH_SIZE) -> Any:
        raise StorageUnavailable("the store did not answer")
        yield 0  # pragma: no cover - makes this a generator, as erase_scope is

    monkeypatch.setattr(store, "erase_scope", unavailable)

    with pytest.raises(CommandError, match="Erasing idempotency keys failed"):
        erase("--user", user_pk(client), "--no-input")


def test_erase__credentials_finds_keys_scoped_by_an_authorization_header(
    client: Caller,  # noqa: F811
) -> None:
    # A plain view behind the middleware, with no authentication of this header: the
    # request is scoped by a hash of it, which --user cannot find and --credentials can.
    header = "Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b"
    caller = Client(raise_request_exception=False, headers={"Authorization": header})
    send(caller, "/plain/behave/", {"label": "pay"}, key="paid")
    send(client, "/plain/behave/", {"label": "pay"}, key="paid")

    out = erase("--credentials", header, "--user", user_pk(client), "--no-input")

    assert "Erased 1 idempotency key(s) of scope 'credentials:" in out
    assert header not in out
    assert "--user finds the keys stored under the user's scope" in out
    assert stored_records() == []


def test_user_scope__is_the_default_scope_of_that_user(client: Caller) -> None:  # noqa: F811
    assert user_scope(user_pk(client)) == scope_of(client)


# Under traffic


@pytest.mark.postgres
@DATABASE_STORAGE_ONLY
def test_erase__waits_for_a_row_a_request_holds_instead_of_leaving_it(
    client: Caller,  # noqa: F811
) -> None:
    # The purge skips locked rows and takes them next run; an erasure that did so would say
    # "erased" and leave the row a request was completing at that moment.
    send(client, "/plain/behave/", {"label": "pay"}, key="paid")
    held, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []
    outputs: list[str] = []

    def holder() -> None:
        try:
            with transaction.atomic():
                list(IdempotencyKey.objects.select_for_update().filter(key="paid"))
                held.set()
                release.wait(JOIN_SECONDS)
        except BaseException as exc:  # pragma: no cover - reported by the assertions
            errors.append(exc)
        finally:
            close_thread_connections()

    def eraser() -> None:
        try:
            outputs.append(erase("--user", user_pk(client), "--no-input"))
        except BaseException as exc:  # pragma: no cover - reported by the assertions
            errors.append(exc)
        finally:
            close_thread_connections()

    threads = [threading.Thread(target=holder), threading.Thread(target=eraser)]
    threads[0].start()
    assert held.wait(JOIN_SECONDS)
    threads[1].start()
    try:
        deadline = time.monotonic() + JOIN_SECONDS
        while not statements_waiting_on_a_lock("%FOR UPDATE%"):
            assert time.monotonic() < deadline, "the erasure never waited for the held row"
            assert threads[1].is_alive(), outputs
            time.sleep(0.01)
    finally:
        release.set()
        for thread in threads:
            thread.join(JOIN_SECONDS)

    assert not errors, errors
    assert "Erased 1 idempotency key(s)" in outputs[0]
    assert stored_records() == []


@pytest.mark.redis
@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_erase__storage_names_a_views_own_storage(
    storage_backend: str, redis_cache: object, settings: Any
) -> None:
    # IDEMPOTENCY_STORAGE is the database, but a view keeps its keys in Redis.
    settings.IDEMPOTENCY_CACHE_ALIAS = "idempotency"
    cache = get_storage(CACHE)
    claim = cache.claim("user:auth.user:7", "k", "f", lease=timedelta(minutes=5))
    cache.complete(claim, StoredResponse(201, body=b"paid"), ttl=timedelta(hours=1))  # type: ignore[arg-type]

    out = erase("--user", "7", "--storage", CACHE, "--no-input")

    assert "Erased 1 idempotency key(s) of scope 'user:auth.user:7'." in out
    assert cache.get("user:auth.user:7", "k") is None
