"""An owner slower than its lease: it cannot complete, and its writes do not survive.

The first run of the view, after making its writes, pauses until its 1 s lease has ended by
the store's clock (or until the test lets it go, after ending its lease in the store and taking
the key over): no sleep guesses how long that takes. The runs after it do not pause, and hold a
lease long enough for a loaded machine, so none of them is late by accident. With
DatabaseStorage the owner's writes and the stored response share one transaction, so a late
owner answers 409 ``idempotency_lease_expired`` and its writes roll back: exactly one business
write survives, the one of whoever completed.

Through the storage interface, a take-over that loses the race to a request that took the dead
key first changes nothing, and reports the other request's live record.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.http.response import HttpResponseBase
from django.test import Client, override_settings
from django.utils import timezone

from django_idempotency.exceptions import IdempotencyLeaseExpired
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import Claim, DatabaseStorage, Record
from django_idempotency.testing import close_thread_connections
from tests.leases import expire_now, wait_for_expiry
from tests.pg_locks import claims_waiting_on_a_lock
from tests.store_faults import on_the_table
from tests.testapp import views
from tests.testapp.models import Execution, Order

LEASE = 1.0
JOIN_SECONDS = 30.0
# Every request comes from one caller, by Basic auth: DRF authenticates it, and the
# middleware scopes a plain view's caller by the header's hash.
CALLER = ("takeover", "pw")
AUTHORIZATION = "Basic " + base64.b64encode(":".join(CALLER).encode()).decode()


@dataclass(frozen=True)
class EntryPoint:
    path: str
    payload: dict[str, Any]
    patch: Callable[[pytest.MonkeyPatch, Callable[[], None]], None]
    count: Callable[[], int]


def _patch_behave(monkeypatch: pytest.MonkeyPatch, after_writes: Callable[[], None]) -> None:
    behave = views.behave

    def slow_behave(payload: dict[str, Any], label: str) -> Any:
        response = behave(payload, label)
        after_writes()
        return response

    monkeypatch.setattr(views, "behave", slow_behave)


def _patch_perform_create(
    monkeypatch: pytest.MonkeyPatch, after_writes: Callable[[], None]
) -> None:
    perform_create = views.OrderViewSet.perform_create

    def slow_create(self: views.OrderViewSet, serializer: views.OrderSerializer) -> None:
        perform_create(self, serializer)
        after_writes()

    monkeypatch.setattr(views.OrderViewSet, "perform_create", slow_create)


def _count_orders() -> int:
    orders = Order.objects.count()
    assert Execution.objects.filter(label="order").count() == orders
    return orders


MIDDLEWARE = EntryPoint(
    "/decorated/behave/",
    {"label": "takeover"},
    _patch_behave,
    lambda: Execution.objects.filter(label="takeover").count(),
)
DRF_VIEWSET = EntryPoint("/api/orders/", {"item": "book"}, _patch_perform_create, _count_orders)


@pytest.fixture(
    params=[pytest.param(MIDDLEWARE, id="middleware"), pytest.param(DRF_VIEWSET, id="drf_viewset")]
)
def entry(request: pytest.FixtureRequest) -> EntryPoint:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def caller(transactional_db: None, django_user_model: Any) -> None:
    django_user_model.objects.create_user(CALLER[0], password=CALLER[1])


@pytest.fixture
def short_lease() -> Iterator[None]:
    with override_settings(IDEMPOTENCY_LEASE=LEASE):
        yield


@pytest.fixture
def first_run_pauses(
    entry: EntryPoint, monkeypatch: pytest.MonkeyPatch
) -> Callable[[Callable[[], object]], threading.Event]:
    """Make the view's first run call ``pause`` after its writes; return an event set as it does."""

    def arrange(pause: Callable[[], object]) -> threading.Event:
        started = threading.Event()
        pauses = iter([pause])

        def after_writes() -> None:
            first = next(pauses, None)
            if first is not None:
                started.set()
                first()

        entry.patch(monkeypatch, after_writes)
        return started

    return arrange


@dataclass(frozen=True)
class Answer:
    status: int
    replayed: bool
    body: bytes

    @property
    def is_lease_expired(self) -> bool:
        """A 409 for a lost lease: a problem document, or DRF's ``{"detail": ...}``."""
        if self.status != 409:
            return False
        error = json.loads(self.body)
        if "code" in error:
            return bool(error["code"] == IdempotencyLeaseExpired.default_code)
        return bool(error == {"detail": IdempotencyLeaseExpired.default_detail})

    @classmethod
    def of(cls, response: HttpResponseBase) -> Answer:
        return cls(
            response.status_code,
            response.get("Idempotent-Replayed") == "true",
            response.content,  # type: ignore[attr-defined]
        )


def post(entry: EntryPoint, key: str) -> Answer:
    response = Client().post(
        entry.path,
        data=json.dumps(entry.payload),
        content_type="application/json",
        headers={"Idempotency-Key": key, "Authorization": AUTHORIZATION},
    )
    return Answer.of(response)


def send_in_thread(entry: EntryPoint, key: str) -> tuple[threading.Thread, list[Answer]]:
    answers: list[Answer] = []

    def run() -> None:
        try:
            answers.append(post(entry, key))
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, answers


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("short_lease")
def test_takeover__owner_slower_than_its_lease_cannot_complete_and_rolls_back(
    entry: EntryPoint, first_run_pauses: Callable[[Callable[[], object]], threading.Event]
) -> None:
    key = f"key-{uuid.uuid4()}"
    first_run_pauses(lambda: wait_for_expiry(key))

    late = post(entry, key)

    assert late.is_lease_expired, late
    assert entry.count() == 0
    # The retry is not the slow owner: its lease must outlast its run on a loaded machine.
    with override_settings(IDEMPOTENCY_LEASE=JOIN_SECONDS):
        retry = post(entry, key)
        assert (retry.status, retry.replayed) == (201, False), retry
        assert entry.count() == 1
        assert post(entry, key) == Answer(201, True, retry.body)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_takeover__second_request_takes_over_while_the_owner_still_runs(
    entry: EntryPoint, first_run_pauses: Callable[[Callable[[], object]], threading.Event]
) -> None:
    # PostgreSQL only: on SQLite the owner's open write transaction locks out every other
    # writer, so nobody can take over while it runs.
    proceed = threading.Event()
    started = first_run_pauses(lambda: proceed.wait(JOIN_SECONDS))
    key = f"key-{uuid.uuid4()}"

    owner, owner_answers = send_in_thread(entry, key)
    assert started.wait(timeout=JOIN_SECONDS)
    expire_now(key)  # the owner's lease ends while it still runs
    taker = post(entry, key)
    assert owner.is_alive(), "the owner finished before the takeover; the test proves nothing"
    proceed.set()
    owner.join(timeout=JOIN_SECONDS)

    assert (taker.status, taker.replayed) == (201, False)
    assert len(owner_answers) == 1
    assert owner_answers[0].is_lease_expired, owner_answers
    # The owner's writes rolled back with its refused completion; the taker's stayed.
    assert entry.count() == 1
    assert post(entry, key) == Answer(201, True, taker.body)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("redis_cache")
@override_settings(
    IDEMPOTENCY_STORAGE="django_idempotency.storage.CacheStorage",
    IDEMPOTENCY_CACHE_ALIAS="idempotency",
)
def test_takeover_cache__late_owner_keeps_its_response_but_cannot_store_it(
    entry: EntryPoint,
    first_run_pauses: Callable[[Callable[[], object]], threading.Event],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # CacheStorage shares no transaction with the view: a late owner's writes are already
    # committed, so it answers what it did. What the lease still guarantees is that its
    # completion is refused, and every later retry replays the taker's response.
    proceed = threading.Event()
    started = first_run_pauses(lambda: proceed.wait(JOIN_SECONDS))
    key = f"key-{uuid.uuid4()}"

    owner, owner_answers = send_in_thread(entry, key)
    assert started.wait(timeout=JOIN_SECONDS)
    expire_now(key)  # the owner's lease ends while it still runs
    taker = post(entry, key)
    assert owner.is_alive(), "the owner finished before the takeover; the test proves nothing"
    proceed.set()
    owner.join(timeout=JOIN_SECONDS)

    assert (taker.status, taker.replayed) == (201, False)
    assert [(a.status, a.replayed) for a in owner_answers] == [(201, False)]
    assert entry.count() == 2
    assert "finished after its lease ended" in caplog.text
    assert post(entry, key) == Answer(201, True, taker.body)


def test_take_over__loses_to_a_request_that_took_the_key_first() -> None:
    # Between reading the dead record and taking it over, another request takes it: the
    # take-over changes nothing, and the claim reports the other request's live record.
    storage = DatabaseStorage()
    assert isinstance(storage.claim("scope", "k", "fp", lease=timedelta(minutes=1)), Claim)
    expire_now("k", storage=storage)
    if connection.vendor == "postgresql":
        # The read and the take-over run inside the claim function: the other request's
        # take-over is held uncommitted until ours is seen waiting on its row.
        raced, result = _claim_while_another_takes_over(storage)
    else:
        raced, result = _claim_after_another_took_over(storage)

    assert raced, "no take-over was attempted; the test proves nothing"
    assert isinstance(result, Record)
    assert result.token == "t" * 32


def _other_request_takes_over() -> None:
    IdempotencyKey.objects.filter(key="k").update(
        token="t" * 32, expires_at=timezone.now() + timedelta(minutes=1)
    )


def _claim_after_another_took_over(storage: DatabaseStorage) -> tuple[list[str], Claim | Record]:
    raced: list[str] = []

    def another_request_first(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not raced and on_the_table("UPDATE")(sql):
            raced.append(sql)
            _other_request_takes_over()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(another_request_first):
        result = storage.claim("scope", "k", "fp", lease=timedelta(minutes=1))
    return raced, result


def _claim_while_another_takes_over(storage: DatabaseStorage) -> tuple[list[str], Claim | Record]:
    taken, go = threading.Event(), threading.Event()
    results: list[Claim | Record | BaseException] = []

    def other_request() -> None:
        try:
            with transaction.atomic():
                _other_request_takes_over()
                taken.set()
                go.wait(JOIN_SECONDS)
        finally:
            close_thread_connections()

    def ours() -> None:
        try:
            results.append(storage.claim("scope", "k", "fp", lease=timedelta(minutes=1)))
        except BaseException as exc:  # pragma: no cover - reported by the assertions
            results.append(exc)
        finally:
            close_thread_connections()

    other = threading.Thread(target=other_request)
    other.start()
    assert taken.wait(JOIN_SECONDS)
    claimer = threading.Thread(target=ours)
    claimer.start()
    raced: list[str] = []
    try:
        deadline = time.monotonic() + JOIN_SECONDS
        while not raced:
            raced = claims_waiting_on_a_lock()
            assert time.monotonic() < deadline, "our claim never waited on the other's row"
            if not raced:
                time.sleep(0.01)
    finally:
        go.set()
        other.join(JOIN_SECONDS)
        claimer.join(JOIN_SECONDS)
    [result] = results
    assert not isinstance(result, BaseException), result
    return raced, result
