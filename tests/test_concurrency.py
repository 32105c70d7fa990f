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
from django.db import connection
from django.http.response import HttpResponseBase
from django.test import AsyncClient, Client

from django_idempotency.exceptions import IdempotencyKeyInProgress
from tests.request_threads import request_thread
from tests.testapp import views
from tests.testapp.models import Execution, Order

pytestmark = [pytest.mark.server_db, pytest.mark.django_db(transaction=True)]

THREADS = 50
# Every duplicate comes from one caller, scoped by this header's hash (DRF authenticates
# nothing with it), as retries of one client are.
CALLER = "Bearer concurrency-caller"
# In wait mode the owner's view sleeps this long, so the duplicates wait for it.
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
        """A 409 for an in-flight key, by its code: every entry point's body carries it."""
        return self.status == 409 and self.code == IdempotencyKeyInProgress.default_code

    @classmethod
    def of(cls, response: HttpResponseBase) -> Answer:
        body = response.content  # type: ignore[attr-defined]
        code = None
        if response.status_code >= 400 and response.get("Content-Type", "").startswith(
            ("application/problem+json", "application/json")
        ):
            code = json.loads(body).get("code")
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


class Hold:
    """Keep the owner's view running until every duplicate has been answered.

    Its ``name`` goes in the payload's ``hold``; each sender passes its answer through
    ``answered``. So every duplicate certainly arrives while the owner runs, whatever the
    machine's speed: no sleep guesses how long the others take.
    """

    def __init__(self, duplicates: int) -> None:
        self.name = f"hold-{uuid.uuid4()}"
        self._event = views.HOLDS[self.name] = threading.Event()
        self._left = duplicates
        self._lock = threading.Lock()

    def answered(self, answer: Answer) -> Answer:
        with self._lock:
            self._left -= 1
            if self._left <= 0:
                self._event.set()
        return answer

    def wait(self) -> None:
        """Wait, in the owner's view, until the duplicates were answered."""
        self._event.wait(views.HOLD_LIMIT)


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
    hold = Hold(duplicates=THREADS - 1)
    payload = {"label": label, "hold": hold.name}

    answers = send_all_at_once(THREADS, lambda _: hold.answered(post(path, key, payload)))

    assert len(answers) == THREADS
    assert_one_owner(answers)
    assert Execution.objects.filter(label=label).count() == 1
    # Every duplicate overlapped the owner, and was refused while it ran.
    assert sum(a.is_in_progress for a in answers) == THREADS - 1


def test_drf_viewset__fifty_threads_with_one_key_create_one_order(
    storage_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    create = views.OrderViewSet.perform_create
    hold = Hold(duplicates=THREADS - 1)

    def held_create(self: views.OrderViewSet, serializer: views.OrderSerializer) -> None:
        create(self, serializer)
        hold.wait()

    monkeypatch.setattr(views.OrderViewSet, "perform_create", held_create)
    key = f"key-{uuid.uuid4()}"

    answers = send_all_at_once(
        THREADS,
        lambda _: hold.answered(post("/api/orders/", key, {"item": "book", "quantity": 2})),
    )

    owner = assert_one_owner(answers)
    assert Order.objects.count() == 1
    assert Execution.objects.filter(label="order").count() == 1
    assert json.loads(owner.body)["id"] == Order.objects.get().pk
    assert sum(a.is_in_progress for a in answers) == THREADS - 1


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

    answers = send_all_at_once(10, lambda _: post(path, key, payload))

    owner = assert_one_owner(answers)
    # Nobody was turned away: every duplicate waited for the owner (a wait that timed out
    # would answer 409) and got its response.
    assert all(a.status == 201 for a in answers)
    assert sum(a.replayed for a in answers) == 9
    assert json.loads(owner.body)["executions"] == 1
    assert Execution.objects.filter(label=label).count() == 1


def test_middleware_async__gathered_duplicates_run_the_view_once(storage_backend: str) -> None:
    key, label = f"key-{uuid.uuid4()}", f"async-{uuid.uuid4()}"
    hold = Hold(duplicates=9)
    body = json.dumps({"label": label, "hold": hold.name})

    async def send() -> Answer:
        async with request_thread():
            response = await AsyncClient().post(
                "/async/behave/",
                data=body,
                content_type="application/json",
                headers={"Idempotency-Key": key, "Authorization": CALLER},
            )
        return hold.answered(Answer.of(response))

    async def send_all() -> list[Answer]:
        return await asyncio.wait_for(
            asyncio.gather(*(send() for _ in range(10))), timeout=JOIN_SECONDS
        )

    answers = asyncio.run(send_all())

    assert_one_owner(answers)
    assert Execution.objects.filter(label=label).count() == 1
    assert sum(a.is_in_progress for a in answers) == 9
