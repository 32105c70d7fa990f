"""PostgreSQL's claim: one call of ``django_idempotency_claim`` (migration 0002).

The function reads the record and claims it in one round trip. Opted in with
``DatabaseStorage(flush_claims=False)``, a claim made when no transaction is open commits
without waiting for its WAL flush (docs/design-choice.md, "The claim's commit"); by default it
is flushed. These tests hold it to what that must not change: the setting ends with the
claim's own implicit transaction (a pooled connection, and the view's commit after it, stay
synchronous), a claim inside a transaction leaves the caller's setting alone, and a lost race
is read, not taken.
The race is staged with a claim held open in another transaction; the test waits until the
contender is seen blocked on it in ``pg_stat_activity``, not for a guessed time.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import Claim, DatabaseStorage, Record, State
from django_idempotency.testing import close_thread_connections
from tests.pg_locks import claims_waiting_on_a_lock

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LEASE = timedelta(seconds=60)
JOIN_SECONDS = 30.0


def synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('synchronous_commit')")
        row = cursor.fetchone()
    assert row is not None
    return str(row[0])


def claim_calls(queries: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in queries if "django_idempotency_claim(" in q["sql"]]


def test_claim__is_one_round_trip() -> None:
    with CaptureQueriesContext(connection) as queries:
        claim = DatabaseStorage().claim("scope", uuid.uuid4().hex, "fp", lease=LEASE)

    assert isinstance(claim, Claim)
    assert len(queries) == 1
    assert claim_calls(queries) == [queries[0]["sql"]]


def test_claim__outside_a_transaction_is_unflushed_and_the_setting_does_not_outlive_it() -> None:
    before = synchronous_commit()
    with CaptureQueriesContext(connection) as queries:
        claim = DatabaseStorage(flush_claims=False).claim(
            "scope", uuid.uuid4().hex, "fp", lease=LEASE
        )

    assert isinstance(claim, Claim)
    [call] = claim_calls(queries)
    assert call.endswith("false::boolean)")
    assert synchronous_commit() == before
    assert IdempotencyKey.objects.filter(token=claim.token).exists()


def test_claim__unflushed_the_function_turns_synchronous_commit_off_for_its_transaction() -> None:
    # What the function does with the flag, seen from inside the transaction it runs in.
    before = synchronous_commit()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT o_claimed FROM django_idempotency_claim(%s, %s, 'fp', %s, 'POST', "
                "'/', interval '60 seconds', false)",
                ["scope", uuid.uuid4().hex, uuid.uuid4().hex],
            )
            assert cursor.fetchone() == (True,)
        inside = synchronous_commit()

    assert inside == "off"
    assert synchronous_commit() == before


def test_claim__by_default_is_flushed() -> None:
    with CaptureQueriesContext(connection) as queries:
        claim = DatabaseStorage().claim("scope", uuid.uuid4().hex, "fp", lease=LEASE)

    assert isinstance(claim, Claim)
    [call] = claim_calls(queries)
    assert call.endswith("true::boolean)")


def test_claim__inside_a_transaction_leaves_the_callers_commit_synchronous() -> None:
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        claim = DatabaseStorage(flush_claims=False).claim(
            "scope", uuid.uuid4().hex, "fp", lease=LEASE
        )
        setting = synchronous_commit()

    assert isinstance(claim, Claim)
    assert setting != "off"
    [call] = claim_calls(queries)
    assert call.endswith("true::boolean)")


def test_claim__a_claim_committed_after_the_read_is_read_not_taken() -> None:
    storage = DatabaseStorage(flush_claims=False)
    key = uuid.uuid4().hex
    held = threading.Event()
    release = threading.Event()
    results: dict[str, Claim | Record | BaseException] = {}

    def holder() -> None:
        try:
            with transaction.atomic():
                results["holder"] = storage.claim("scope", key, "fp", lease=LEASE)
                held.set()
                release.wait(JOIN_SECONDS)
        except BaseException as exc:  # pragma: no cover - reported by the assertions
            results["holder"] = exc
            held.set()
        finally:
            close_thread_connections()

    def contender() -> None:
        try:
            results["contender"] = storage.claim("scope", key, "fp", lease=LEASE)
        except BaseException as exc:  # pragma: no cover - reported by the assertions
            results["contender"] = exc
        finally:
            close_thread_connections()

    first = threading.Thread(target=holder)
    first.start()
    assert held.wait(JOIN_SECONDS)
    second = threading.Thread(target=contender)
    second.start()
    try:
        # The contender's claim waits on the holder's uncommitted row: a condition, polled.
        deadline = time.monotonic() + JOIN_SECONDS
        while not claims_waiting_on_a_lock():
            assert time.monotonic() < deadline, "the contender never blocked on the claim"
            time.sleep(0.01)
    finally:
        release.set()
        first.join(JOIN_SECONDS)
        second.join(JOIN_SECONDS)

    owner = results["holder"]
    assert isinstance(owner, Claim)
    lost = results["contender"]
    assert isinstance(lost, Record), lost
    assert lost.state is State.IN_FLIGHT
    assert lost.token == owner.token
    assert IdempotencyKey.objects.filter(scope="scope", key=key).count() == 1
