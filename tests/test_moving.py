"""Moving between storages without a window: a fleet of old, moving and new instances at once.

Each request is sent as one kind of instance would handle it: ``IDEMPOTENCY_STORAGE`` names
the old storage, the ``MovingStorage`` or the new storage for that request. Both directions
(the database to Redis and back), through every entry point, on real PostgreSQL or SQLite and
real Redis. Whatever mix of instances a rolling deploy runs, a key runs once and replays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.test import override_settings

from django_idempotency import checks_cache
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import CacheStorage, DatabaseStorage, postgresql
from django_idempotency.storage.base import StorageUnavailable
from django_idempotency.storage.registry import get_storage
from tests.factories import IdempotencyKeyFactory
from tests.records import redis_record_names
from tests.redis_servers import caches_with, free_port, redis_cache_config
from tests.store_faults import failing_queries, on_the_idempotency_table
from tests.test_behaviour import (  # noqa: F401  (fixtures)
    Caller,
    claim_in_flight,
    client,
    entry_point,
    executions,
    send,
    url,
)
from tests.testapp.storages import CacheToDatabase

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.redis]

DATABASE = "django_idempotency.storage.DatabaseStorage"
CACHE = "django_idempotency.storage.CacheStorage"
LEASE = timedelta(minutes=5)


@dataclass(frozen=True)
class Move:
    old: str
    new: str
    mover: str

    def __str__(self) -> str:
        return f"{self.old.rsplit('.', 1)[1]}-to-{self.new.rsplit('.', 1)[1]}"


MOVES = [
    Move(DATABASE, CACHE, "tests.testapp.storages.DatabaseToCache"),
    Move(CACHE, DATABASE, "tests.testapp.storages.CacheToDatabase"),
]


@pytest.fixture(params=MOVES, ids=str)
def move(request: pytest.FixtureRequest, redis_cache: object, settings: Any) -> Move:
    settings.IDEMPOTENCY_CACHE_ALIAS = "idempotency"
    chosen: Move = request.param
    return chosen


def on(settings: Any, path: str) -> None:
    """Handle the next requests as an instance configured with the storage ``path``."""
    settings.IDEMPOTENCY_STORAGE = path


def records_in(path: str) -> int:
    """How many records the storage ``path`` holds."""
    storage = get_storage(path)
    if isinstance(storage, CacheStorage):
        return len(list(redis_record_names(storage)))
    return IdempotencyKey.objects.count()


def test_a_key_the_mover_runs__is_in_flight_for_old_and_new_instances(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    move: Move,
    settings: Any,
) -> None:
    on(settings, move.mover)
    claim_in_flight(client, url, {"label": "pay"}, "k", LEASE)

    for instance in (move.old, move.new, move.mover):
        on(settings, instance)
        assert send(client, url, {"label": "pay"}, key="k").status_code == 409, instance
    assert executions("pay") == 0


def test_a_response_the_mover_stored__replays_on_every_instance(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    move: Move,
    settings: Any,
) -> None:
    on(settings, move.mover)
    first = send(client, url, {"label": "pay"}, key="k")

    for instance in (move.old, move.new, move.mover):
        on(settings, instance)
        replay = send(client, url, {"label": "pay"}, key="k")
        assert replay.headers.get("Idempotent-Replayed") == "true", instance
        assert replay.content == first.content
    assert executions("pay") == 1


@pytest.mark.parametrize("made_on", ["old", "new"])
def test_a_response_an_old_or_new_instance_stored__replays_through_the_mover(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    move: Move,
    settings: Any,
    made_on: str,
) -> None:
    # Old instances run until the mover is everywhere; new ones start before the last mover
    # stops. Either's records answer the mover's requests.
    on(settings, getattr(move, made_on))
    first = send(client, url, {"label": "pay"}, key="k")

    on(settings, move.mover)
    replay = send(client, url, {"label": "pay"}, key="k")

    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.content == first.content
    assert executions("pay") == 1


@pytest.mark.parametrize("made_on", ["old", "new"])
def test_a_key_in_flight_on_an_old_or_new_instance__is_in_flight_for_the_mover(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    move: Move,
    settings: Any,
    made_on: str,
) -> None:
    on(settings, getattr(move, made_on))
    claim_in_flight(client, url, {"label": "pay"}, "k", LEASE)

    on(settings, move.mover)
    assert send(client, url, {"label": "pay"}, key="k").status_code == 409

    assert executions("pay") == 0
    # The mover let go of its own claim in the other storage: one record, where it was made.
    other = move.new if made_on == "old" else move.old
    assert records_in(other) == 0


def test_a_view_that_failed__frees_the_key_in_both(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    move: Move,
    settings: Any,
) -> None:
    on(settings, move.mover)
    send(client, url, {"label": "pay", "status": 403}, key="k")

    assert records_in(move.old) == 0
    assert records_in(move.new) == 0


def test_the_new_storage_down__fails_closed_and_leaves_no_claim_in_the_old(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    move: Move,
    settings: Any,
) -> None:
    on(settings, move.mover)
    if move.new == CACHE:
        broken: Any = override_settings(CACHES=caches_with(redis_cache_config(free_port())))
    else:
        broken = failing_queries(on_the_idempotency_table, "connection refused")
    with broken:
        response = send(client, url, {"label": "pay"}, key="k")

    assert response.status_code == 503
    assert executions("pay") == 0
    assert records_in(move.old) == 0


def test_the_other_storage_failing_to_complete__still_answers_and_replays(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    move: Move,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Redis completes after the database (once the view's writes committed) and fails: the
    # database's record answers retries; Redis's claim ends with its lease.
    def unavailable(*args: Any, **kwargs: Any) -> None:
        raise StorageUnavailable("the idempotency cache did not answer")

    monkeypatch.setattr(CacheStorage, "complete", unavailable)
    on(settings, move.mover)
    with caplog.at_level(logging.WARNING, logger="django_idempotency.storage.moving"):
        first = send(client, url, {"label": "pay"}, key="k")

    assert first.status_code == 201
    assert "did not take a completion" in caplog.text
    on(settings, DATABASE)
    assert send(client, url, {"label": "pay"}, key="k").content == first.content
    assert executions("pay") == 1


def test_the_purge__deletes_the_databases_expired_records_while_moving(
    move: Move, settings: Any
) -> None:
    IdempotencyKeyFactory.create(expired=True)
    on(settings, move.mover)

    call_command("purge_idempotency_keys", stdout=StringIO())

    assert not IdempotencyKey.objects.exists()


@pytest.mark.postgres
@pytest.mark.parametrize("move", [MOVES[1]], indirect=True, ids=str)
def test_a_commit_whose_reply_was_lost__keeps_the_key_in_flight_for_old_instances(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    move: Move,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The database ran the completion and its COMMIT, but the reply never came: the engine
    # answers 503 and releases, which the database ignores (its record is completed). The
    # Redis claim must stay too, or an instance on Redis alone runs the payment again.
    complete_and_commit = postgresql.complete_and_commit

    def committed_then_lost(*args: Any, **kwargs: Any) -> None:
        complete_and_commit(*args, **kwargs)
        raise StorageUnavailable("the idempotency database did not answer")

    monkeypatch.setattr(postgresql, "complete_and_commit", committed_then_lost)
    on(settings, move.mover)
    assert send(client, url, {"label": "pay"}, key="k").status_code == 503
    monkeypatch.setattr(postgresql, "complete_and_commit", complete_and_commit)

    on(settings, move.old)
    assert send(client, url, {"label": "pay"}, key="k").status_code == 409
    on(settings, move.mover)
    assert send(client, url, {"label": "pay"}, key="k").status_code == 409  # the old one first
    on(settings, move.new)
    assert send(client, url, {"label": "pay"}, key="k").headers["Idempotent-Replayed"] == "true"
    assert executions("pay") == 1


@pytest.mark.parametrize("mover", [move.mover for move in MOVES])
def test_checks__look_at_the_cache_a_move_uses(settings: Any, mover: str) -> None:
    # A move whose Redis half is misconfigured passed every check, then answered 500.
    settings.IDEMPOTENCY_STORAGE = mover
    settings.IDEMPOTENCY_CACHE_ALIAS = "default"  # a LocMemCache: no keys across processes

    problems = checks_cache.check_cache_storage(None)

    assert problems
    assert all(str(problem.id).startswith("django_idempotency.E1") for problem in problems)


def test_outside_a_transaction__the_deciding_storage_still_completes_first(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    move: Move,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # IDEMPOTENCY_ATOMIC = False: no transaction to wait for, so on_commit would have run
    # the other storage's completion at once, before the database's.
    settings.IDEMPOTENCY_ATOMIC = False
    order: list[str] = []
    for storage_class in (CacheStorage, DatabaseStorage):
        complete = storage_class.complete

        def recording(self: Any, *args: Any, _complete: Any = complete, **kwargs: Any) -> None:
            order.append(type(self).__name__)
            _complete(self, *args, **kwargs)

        monkeypatch.setattr(storage_class, "complete", recording)
    on(settings, move.mover)

    send(client, url, {"label": "pay"}, key="k")

    assert order == ["DatabaseStorage", "CacheStorage"]


# Operators' calls while moving: lookups, census, erasure


def test_a_lookup__finds_a_record_in_either_storage(move: Move) -> None:
    old, new, mover = get_storage(move.old), get_storage(move.new), get_storage(move.mover)
    old.claim("scope", "in-old", "fp", lease=LEASE)
    new.claim("scope", "in-new", "fp", lease=LEASE)

    assert [mover.get("scope", key) is not None for key in ("in-old", "in-new", "nowhere")] == [
        True,
        True,
        False,
    ]


def test_the_census__is_the_new_storages(move: Move) -> None:
    mover = get_storage(move.mover)
    get_storage(move.new).claim("scope", "k", "fp", lease=LEASE)

    census, own = mover.census(), get_storage(move.new).census()
    assert census is not None
    assert own is not None
    assert (census.in_flight, census.completed) == (own.in_flight, own.completed)
    assert census.in_flight.value == 1


def test_erasing_a_scope__erases_it_in_both_and_counts_both(move: Move) -> None:
    old, new, mover = get_storage(move.old), get_storage(move.new), get_storage(move.mover)
    for storage, key in ((old, "a"), (new, "b"), (new, "c")):
        storage.claim("user:auth.user:1", key, "fp", lease=LEASE)

    counted = mover.count_scope("user:auth.user:1")
    erased = sum(mover.erase_scope("user:auth.user:1"))

    assert counted.value == erased == 3
    assert mover.count_scope("user:auth.user:1").value == 0
    assert (old.get("user:auth.user:1", "a"), new.get("user:auth.user:1", "b")) == (None, None)


def test_a_count_that_one_storage_can_only_bound__is_at_least(
    move: Move, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django_idempotency.storage.base import Count

    mover = get_storage(move.mover)
    monkeypatch.setattr(
        type(get_storage(move.new)), "count_scope", lambda self, scope: Count(5, "at_least")
    )

    count = mover.count_scope("user:auth.user:1")
    assert (count.value, count.is_exact) == (5, False)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [(None, CACHE, "needs both storages"), (DATABASE, DATABASE, "the same storage")],
)
def test_a_move_without_two_storages__is_refused_where_it_is_built(
    old: str | None, new: str, problem: str
) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from django_idempotency.storage.moving import MovingStorage

    with pytest.raises(ImproperlyConfigured, match=problem):
        MovingStorage(old=old, new=new)


def test_a_claim_the_move_did_not_make__is_refused(move: Move) -> None:
    mover, old = get_storage(move.mover), get_storage(move.old)
    foreign = old.claim("scope", "k", "fp", lease=LEASE)
    assert not hasattr(foreign, "state")

    with pytest.raises(TypeError, match="did not make"):
        mover.release(foreign)  # type: ignore[arg-type,unused-ignore]


class _InstanceMove(CacheToDatabase):
    """A move naming its storages as instances, not paths."""

    old = CacheStorage()  # type: ignore[assignment]
    new = DatabaseStorage()  # type: ignore[assignment]


class _SubclassMove(CacheToDatabase):
    """A move naming a project's subclass of a built-in storage, and a path that is none."""

    old = "tests.testapp.storages.TombstoneCacheStorage"
    new = "tests.testapp.storages.NotAStorage"


@pytest.mark.parametrize(
    ("mover", "uses_cache", "uses_database"),
    [
        ("tests.test_moving._InstanceMove", True, True),
        ("tests.test_moving._SubclassMove", True, False),
        ("tests.testapp.storages.NotAStorage", False, False),
    ],
)
def test_which_storages_a_move_uses__counts_instances_and_subclasses(
    settings: Any, mover: str, uses_cache: bool, uses_database: bool
) -> None:
    from django_idempotency.storage.registry import is_in_use

    settings.IDEMPOTENCY_STORAGE = mover

    assert (is_in_use("CacheStorage"), is_in_use("DatabaseStorage")) == (uses_cache, uses_database)
