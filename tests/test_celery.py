"""A real Celery worker on RabbitMQ, its child killed mid-task: the payment happens once.

The recipe of docs/functions.md ("Celery tasks"): ``@idempotent_task`` under a task with
``acks_late`` and ``task_reject_on_worker_lost``, DatabaseStorage on the PostgreSQL test
database, and a bank (an outside service) called with a key derived from the task's.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import State
from tests.celery_tasks import charge_and_notify, pay
from tests.celery_worker import CountingBank, celery_worker
from tests.leases import expire_now
from tests.testapp.models import Execution

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

#: The worker's lease, longer than any test: a test ends it in the store (expire_now) once
#: it saw the redelivered task meet the dead child's claim and retry.
LEASE = 600.0
#: How long a test waits for the worker to reach a state it must reach.
RESULT_SECONDS = 60


def test_a_child_killed_after_its_write_and_the_bank_call__pays_once_after_redelivery(
    tmp_path: Path,
) -> None:
    with (
        CountingBank(hold_first=True) as bank,
        celery_worker(log=tmp_path / "celery.log", storage="database", lease=LEASE) as worker,
    ):
        result = pay.apply_async((42, bank.url), queue=worker.queue)
        assert bank.held.wait(RESULT_SECONDS), worker.log_tail()
        # The child wrote its row (uncommitted) and called the bank; it dies before returning.
        os.kill(bank.held_pids[0], signal.SIGKILL)

        # RabbitMQ redelivers it; the new child meets the dead child's claim and retries
        # instead of failing or running at once, until the lease ends; then it takes the
        # key over and runs: one row, one charge.
        worker.wait_for_log("retry: Retry in")
        assert bank.calls == {"payment-42": 1}
        expire_now("42")
        paid = result.get(timeout=RESULT_SECONDS)

    assert paid["charge"] == "ch_payment-42"
    assert paid["retries"] >= 1  # it waited for the lease instead of running at once
    assert list(Execution.objects.values_list("pk", "label")) == [(paid["execution"], "pay 42")]
    assert bank.calls == {"payment-42": 2}  # called again after the kill, with the same key
    assert bank.charges == 1
    record = IdempotencyKey.objects.get(scope="function:tests.celery_tasks.pay")
    assert (record.key, record.state) == ("42", State.COMPLETED)
    assert "WorkerLostError" in worker.log_tail(20000)


def test_a_task_retried_by_self_retry__gets_the_stored_result_of_its_first_run(
    tmp_path: Path,
) -> None:
    with (
        CountingBank() as bank,
        celery_worker(log=tmp_path / "celery.log", storage="database", lease=LEASE) as worker,
    ):
        result = charge_and_notify.apply_async((7, bank.url), queue=worker.queue)
        charged = result.get(timeout=RESULT_SECONDS)

    assert charged["retries"] == 1
    assert Execution.objects.filter(label="charge 7").count() == 1
    assert charged["execution"] == Execution.objects.get(label="charge 7").pk
    assert bank.calls == {"charge-7": 1}
