"""Concurrent duplicates in one process: real threads, each on its own database connection.

Every test sends one key many times at once (a barrier releases all threads together) to a
view that sleeps, so the duplicates really arrive while the first one runs. The view records
each run as an ``Execution`` row, a table without a unique constraint: the row count is the
number of times the view body ran.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import connection, connections
from django.http.response import HttpResponseBase
from django.test import AsyncClient, Client

from django_idempotency.exceptions import IdempotencyKeyInProgress
from tests.testapp import views
from tests.testapp.models import Execution, Order

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 50
# Every duplicate comes from one caller, scoped by this header's hash (DRF authenticates
# nothing with it), as retries of one client are.
CALLER = "Bearer concurrency-caller"
# The owner's view sleeps this long, so every duplicate arrives while it still runs.
OVERLAP_SECONDS = 0.5
# Every wait is bounded: a hung thread fails the test instead of hanging the suite.
JOIN_SECONDS = 60.0


@dataclass(frozen=True)
class Answer:
    status: int
    replayed: bool
    body: bytes
    code: str | None

    @property
    def is_in_progress(self) -> bool:
        """A 409 for an in-flight key: a problem document, or DRF's ``{"detail": ...}``."""
        if self.status != 409:
            return False
        if self.code is not None:
            return self.code == IdempotencyKeyInProgress.default_code
        return bool(json.loads(self.body) == {"detail": IdempotencyKeyInProgress.default_detail})

    @classmethod
    def of(cls, response: HttpResponseBase) -> Answer:
        body = response.content  # type: ignore[attr-defined]
        code = None
        if response.get("Content-Type") == "application/problem+json":
            code = json.loads(body)["code"]
        return cls(
            status=response.status_code,
            replayed=response.get("Idempotent-Replayed") == "true",
            body=body,
            code=code,
        )


def send_all_at_once(count: int, send: Callable[[int], Answer]) -> list[Answer]:
    """Call ``send(i)`` from ``count`` threads released together; return every answer."""
    barrier = threading.Barrier(count)
    answers: list[Answer | None] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=JOIN_SECONDS)
            answers[index] = send(index)
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + JOIN_SECONDS
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a request thread hung"
    assert errors == []
    return [answer for answer in answers if answer is not None]


def post(path: str, key: str, payload: dict[str, Any], **extra: Any) -> Answer:
    response = Client().post(
        path,
        data=json.dumps(payload),
        content_type="application/json",
        headers={"Idempotency-Key": key, "Authorization": CALLER},
        **extra,
    )
    return Answer.of(response)


def assert_one_owner(answers: list[Answer], *, status: int = 201) -> Answer:
    """Exactly one answer ran the view; every other one is a 409 or a faithful replay."""
    owners = [a for a in answers if a.status == status and not a.replayed]
    assert len(owners) == 1, [(a.status, a.replayed, a.code) for a in answers]
    owner = owners[0]
    for answer in answers:
        if answer is owner:
            continue
        if answer.replayed:
            assert (answer.status, answer.body) == (owner.status, owner.body)
        else:
            assert answer.is_in_progress, answer
    return owner


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/decorated/behave/", id="middleware"),
        pytest.param("/drf/behave/", id="drf_mixin"),
    ],
)
def test_entry_point__fifty_threads_with_one_key_run_the_view_once(
    storage_backend: str, path: str
) -> None:
    key, label = f"key-{uuid.uuid4()}", f"fifty-{uuid.uuid4()}"
    payload = {"label": label, "sleep": OVERLAP_SECONDS}

    answers = send_all_at_once(THREADS, lambda _: post(path, key, payload))

    assert len(answers) == THREADS
    assert_one_owner(answers)
    assert Execution.objects.filter(label=label).count() == 1
    # The duplicates really overlapped the owner: some were refused while it ran.
    assert any(a.is_in_progress for a in answers)


def test_drf_viewset__fifty_threads_with_one_key_create_one_order(
    storage_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = views.OrderViewSet.perform_create

    def slow_create(self: views.OrderViewSet, serializer: views.OrderSerializer) -> None:
        create(self, serializer)
        time.sleep(OVERLAP_SECONDS)

    monkeypatch.setattr(views.OrderViewSet, "perform_create", slow_create)
    key = f"key-{uuid.uuid4()}"

    answers = send_all_at_once(
        THREADS, lambda _: post("/api/orders/", key, {"item": "book", "quantity": 2})
    )

    owner = assert_one_owner(answers)
    assert Order.objects.count() == 1
    assert Execution.objects.filter(label="order").count() == 1
    assert json.loads(owner.body)["id"] == Order.objects.get().pk
    assert any(a.is_in_progress for a in answers)


def test_entry_point__fifty_threads_with_fifty_keys_each_run_once(storage_backend: str) -> None:
    label = f"distinct-{uuid.uuid4()}"
    payload = {"label": label, "sleep": 0.1}

    answers = send_all_at_once(
        THREADS, lambda i: post("/decorated/behave/", f"key-{i}-{uuid.uuid4()}", payload)
    )

    assert [(a.status, a.replayed) for a in answers] == [(201, False)] * THREADS
    assert Execution.objects.filter(label=label).count() == THREADS


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("/decorated/wait/", id="middleware"),
        pytest.param("/drf/wait/", id="drf_mixin"),
    ],
)
def test_wait_mode__concurrent_duplicates_wait_and_receive_the_replay(
    storage_backend: str, path: str
) -> None:
    key, label = f"key-{uuid.uuid4()}", f"wait-{uuid.uuid4()}"
    payload = {"label": label, "sleep": OVERLAP_SECONDS}

    started = time.monotonic()
    answers = send_all_at_once(10, lambda _: post(path, key, payload))
    elapsed = time.monotonic() - started

    owner = assert_one_owner(answers)
    # Nobody was turned away: every duplicate waited for the owner and got its response.
    assert all(a.status == 201 for a in answers)
    assert sum(a.replayed for a in answers) == 9
    assert json.loads(owner.body)["executions"] == 1
    assert Execution.objects.filter(label=label).count() == 1
    # They waited for the owner rather than for their own timeout (10 s on these views).
    assert elapsed < 5


def test_middleware_async__gathered_duplicates_run_the_view_once(storage_backend: str) -> None:
    key, label = f"key-{uuid.uuid4()}", f"async-{uuid.uuid4()}"
    body = json.dumps({"label": label, "sleep": OVERLAP_SECONDS})

    async def send() -> Answer:
        # Django's ASGIHandler gives each request its own thread for sync code (and so its
        # own database connection); AsyncClient does not, so do what the server does.
        async with ThreadSensitiveContext():
            try:
                response = await AsyncClient().post(
                    "/async/behave/",
                    data=body,
                    content_type="application/json",
                    headers={"Idempotency-Key": key, "Authorization": CALLER},
                )
            finally:
                await sync_to_async(connections.close_all)()
        return Answer.of(response)

    async def send_all() -> list[Answer]:
        return await asyncio.wait_for(
            asyncio.gather(*(send() for _ in range(10))), timeout=JOIN_SECONDS
        )

    answers = asyncio.run(send_all())

    assert_one_owner(answers)
    assert Execution.objects.filter(label=label).count() == 1
    assert any(a.is_in_progress for a in answers)
