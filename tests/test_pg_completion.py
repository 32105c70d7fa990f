"""PostgreSQL: the completion that ends the storage's own transaction carries its ``COMMIT``.

Inside ``DatabaseStorage.atomic()``'s outermost block, ``complete()`` sends the completion and
the ``COMMIT`` in one round trip (docs/design-choice.md, "Round trips on PostgreSQL");
``atomic()``'s own commit then has nothing left to send. What must not change: the view's
writes and the stored response still commit together or not at all; a lost claim still rolls
the view's writes back; a commit that fails still fails as a commit; ``on_commit`` callbacks
still run once, after the commit; and inside anyone else's transaction nothing is committed
early. Each test watches the database from a second connection, never the clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import Claim, DatabaseStorage, OwnershipLost, StoredResponse
from tests.leases import expire_now
from tests.testapp.models import Order

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LEASE = timedelta(seconds=60)
TTL = timedelta(hours=1)
RESPONSE = StoredResponse(status=201, headers=(("Content-Type", "text/plain"),), body=b"made")


@pytest.fixture
def observer() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A second connection, in autocommit: it sees only what has been committed."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
        autocommit=True,
    ) as other:
        yield other


def committed_orders(observer: psycopg.Connection[tuple[object, ...]], item: str) -> int:
    row = observer.execute(
        f"SELECT count(*) FROM {Order._meta.db_table} WHERE item = %s", [item]
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def committed_state(observer: psycopg.Connection[tuple[object, ...]], key: str) -> str | None:
    row = observer.execute(
        f"SELECT state FROM {IdempotencyKey._meta.db_table} WHERE key = %s", [key]
    ).fetchone()
    return None if row is None else str(row[0])


def new_claim(storage: DatabaseStorage) -> Claim:
    claim = storage.claim("scope", uuid.uuid4().hex, "fp", lease=LEASE)
    assert isinstance(claim, Claim)
    return claim


def test_completion__in_the_storages_transaction_commits_it_in_the_same_round_trip(
    observer: psycopg.Connection[tuple[object, ...]],
) -> None:
    storage = DatabaseStorage()
    claim = new_claim(storage)
    callbacks: list[str] = []
    with storage.atomic():
        Order.objects.create(item=claim.key)
        transaction.on_commit(lambda: callbacks.append("ran"))
        with CaptureQueriesContext(connection) as queries:
            storage.complete(claim, RESPONSE, ttl=TTL)
        # Committed by complete() itself: visible to another connection already.
        assert committed_orders(observer, claim.key) == 1
        assert committed_state(observer, claim.key) == "completed"
        assert callbacks == []  # on_commit runs when atomic() exits, as ever
    assert [q["sql"].endswith("; COMMIT") for q in queries] == [True]
    assert callbacks == ["ran"]
    assert storage.get("scope", claim.key) is not None
    assert not connection.in_atomic_block


def test_completion__of_a_lost_claim_commits_nothing_and_the_view_writes_roll_back(
    observer: psycopg.Connection[tuple[object, ...]],
) -> None:
    storage = DatabaseStorage()
    claim = new_claim(storage)
    expire_now(claim.key, storage=storage)
    taken = storage.claim("scope", claim.key, "fp", lease=LEASE)
    assert isinstance(taken, Claim)

    def view_then_complete() -> None:
        with storage.atomic():
            Order.objects.create(item=claim.key)
            storage.complete(claim, RESPONSE, ttl=TTL)

    with pytest.raises(OwnershipLost):
        view_then_complete()

    assert committed_orders(observer, claim.key) == 0
    assert committed_state(observer, claim.key) == "in_flight"
    record = IdempotencyKey.objects.get(key=claim.key)  # the connection is usable again
    assert record.token == taken.token


def test_completion__whose_commit_fails_raises_the_commits_error_and_keeps_nothing(
    observer: psycopg.Connection[tuple[object, ...]],
) -> None:
    storage = DatabaseStorage()
    claim = new_claim(storage)

    def view_then_complete() -> None:
        with storage.atomic():
            Order.objects.create(item=claim.key)
            with connection.cursor() as cursor:
                # A constraint checked only at COMMIT, as Django's foreign keys are on
                # PostgreSQL.
                cursor.execute(
                    "CREATE TEMPORARY TABLE deferred_check (id int UNIQUE DEFERRABLE "
                    "INITIALLY DEFERRED) ON COMMIT DROP"
                )
                cursor.execute("INSERT INTO deferred_check VALUES (1), (1)")
            storage.complete(claim, RESPONSE, ttl=TTL)

    with pytest.raises(IntegrityError):
        view_then_complete()

    assert committed_orders(observer, claim.key) == 0
    assert committed_state(observer, claim.key) == "in_flight"
    assert not connection.in_atomic_block
    assert IdempotencyKey.objects.filter(key=claim.key).count() == 1


def test_completion__inside_someone_elses_transaction_commits_nothing_early(
    observer: psycopg.Connection[tuple[object, ...]],
) -> None:
    storage = DatabaseStorage()
    claim = new_claim(storage)
    with transaction.atomic():
        with storage.atomic():
            Order.objects.create(item=claim.key)
            storage.complete(claim, RESPONSE, ttl=TTL)
        assert committed_orders(observer, claim.key) == 0
        assert committed_state(observer, claim.key) == "in_flight"
    assert committed_orders(observer, claim.key) == 1
    assert committed_state(observer, claim.key) == "completed"


def test_completion__with_a_block_of_the_views_still_open_commits_nothing_early(
    observer: psycopg.Connection[tuple[object, ...]],
) -> None:
    storage = DatabaseStorage()
    claim = new_claim(storage)
    with storage.atomic(), transaction.atomic():
        Order.objects.create(item=claim.key)
        storage.complete(claim, RESPONSE, ttl=TTL)
        assert committed_state(observer, claim.key) == "in_flight"
    assert committed_orders(observer, claim.key) == 1
    assert committed_state(observer, claim.key) == "completed"
