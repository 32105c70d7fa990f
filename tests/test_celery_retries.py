"""What ``idempotent_task`` does with each answer, run in-process: retry or return.

The real worker, broker and kill are in tests/test_celery.py; here a task's ``retry`` is
recorded instead of sent, so each branch is seen with its countdown, on both storages
(test_behaviour's storage matrix) and a database that stops answering.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from celery import Celery, Task

from django_idempotency.calls import Call
from django_idempotency.contrib.celery import MIN_RETRY_DELAY, idempotent_task
from django_idempotency.functions import CallInProgress, CallLeaseExpired
from django_idempotency.storage import StorageUnavailable
from tests.leases import expire_now
from tests.store_faults import failing_queries, on_the_idempotency_table
from tests.test_behaviour import storage  # noqa: F401  (the storage matrix)
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

app = Celery("retries", set_as_current=False)


class Retried(Exception):
    """What a recorded retry raises, in place of celery's Retry."""


class RecordingTask(Task[Any, Any]):
    """A task whose ``retry`` says what it was asked instead of sending a message."""

    retried: list[tuple[type[BaseException], float]]

    def retry(self, *args: Any, **options: Any) -> Any:
        self.retried.append((type(options["exc"]), options["countdown"]))
        return Retried()


@app.task(base=RecordingTask, bind=True)
@idempotent_task(key="order_id")
def ship(self: Task[Any, Any], order_id: int) -> str:
    Execution.objects.create(label=f"ship {order_id}")
    return f"shipped {order_id}"


@app.task(base=RecordingTask)
@idempotent_task(key="order_id", retry_delay=2)
def ship_unbound(order_id: int) -> str:
    Execution.objects.create(label=f"ship {order_id}")
    return f"shipped {order_id}"


@app.task(base=RecordingTask, bind=True)
@idempotent_task(key="order_id", lease=60)
def ship_late(self: Task[Any, Any], order_id: int) -> str:
    expire_now(str(order_id))  # it ran past its lease
    return f"shipped {order_id}"


@pytest.fixture(autouse=True)
def recorded() -> None:
    for task in (ship, ship_unbound, ship_late):
        task.retried = []


def test_a_delivery__runs_and_a_second_returns_its_result(storage: str) -> None:  # noqa: F811
    assert ship(1) == ship(1) == "shipped 1"
    assert Execution.objects.count() == 1
    assert ship.retried == []


def test_a_key_held_by_another_delivery__retries_when_its_lease_ends(storage: str) -> None:  # noqa: F811
    from django_idempotency.call_keys import arguments_fingerprint

    digest = arguments_fingerprint({"order_id": 2})
    Call.prepare("2", ship.run, (), {}, None, digest, None, 60, None).claim()

    with pytest.raises(Retried):
        ship(2)

    # Its first retry comes soon: a duplicate of a fast task gets the result soon.
    assert ship.retried == [(CallInProgress, MIN_RETRY_DELAY.total_seconds())]
    assert Execution.objects.count() == 0


@pytest.mark.parametrize(
    ("retries", "lease_left", "countdown"),
    [(0, 60, 1), (1, 60, 2), (3, 60, 8), (6, 60, 60), (40, 60, 60), (5, 0.2, 1)],
)
def test_later_retries__wait_twice_as_long_but_never_past_the_holders_lease(
    retries: int, lease_left: float, countdown: float
) -> None:
    from types import SimpleNamespace

    from django_idempotency.contrib.celery import _backoff

    task = SimpleNamespace(request=SimpleNamespace(retries=retries))
    waits = _backoff(task, timedelta(seconds=lease_left))  # type: ignore[arg-type]
    assert waits == timedelta(seconds=countdown)


def test_a_fixed_retry_delay__and_an_unbound_task(storage: str) -> None:  # noqa: F811
    from django_idempotency.call_keys import arguments_fingerprint

    digest = arguments_fingerprint({"order_id": 3})
    Call.prepare("3", ship_unbound.run, (), {}, None, digest, None, 60, None).claim()

    with pytest.raises(Retried):
        ship_unbound(3)

    assert ship_unbound.retried == [(CallInProgress, 2.0)]


def test_a_task_that_outlived_its_lease__retries_soon(storage: str) -> None:  # noqa: F811
    with pytest.raises(Retried):
        ship_late(4)

    assert ship_late.retried == [(CallLeaseExpired, MIN_RETRY_DELAY.total_seconds())]


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_a_store_that_does_not_answer__retries_after_retry_after(storage_backend: str) -> None:
    with failing_queries(on_the_idempotency_table), pytest.raises(Retried):
        ship(5)

    assert ship.retried == [(StorageUnavailable, timedelta(seconds=1).total_seconds())]
    assert Execution.objects.count() == 0
