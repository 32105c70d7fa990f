"""Tasks a real Celery worker runs in tests/test_celery.py: payments that call a bank.

The bank is the test's ``CountingBank``: an outside service that takes its own idempotency
key. Each task passes it a key derived from the task's own, so the bank deduplicates a call
the task made before its process was killed.
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

from celery import Task

from django_idempotency.contrib.celery import idempotent_task
from django_idempotency.functions import idempotent_function
from tests.celery_app import app

#: Longer than any test waits: a task told to hold is killed, never woken.
HOLD_SECONDS = 600
#: How often a delivery that meets an in-flight claim looks again. The worker's lease is
#: longer than any test: the test ends it in the store once it saw a retry.
RETRY_SECONDS = 0.5


def call_bank(bank_url: str, key: str) -> dict[str, Any]:
    """Ask the bank to charge under ``key``; it answers the charge and whether to hold."""
    request = urllib.request.Request(
        bank_url,
        data=b"{}",
        headers={"Idempotency-Key": key, "X-Worker-Pid": str(os.getpid())},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


@app.task(bind=True, max_retries=None)
@idempotent_task(key="order_id", retry_delay=RETRY_SECONDS)
def pay(self: Task[Any, Any], order_id: int, bank_url: str) -> dict[str, Any]:
    """Record the payment, then charge it at the bank; hold there when the bank says so."""
    from tests.testapp.models import Execution

    execution = Execution.objects.create(label=f"pay {order_id}")
    answer = call_bank(bank_url, f"payment-{order_id}")
    if answer["hold"]:
        time.sleep(HOLD_SECONDS)  # the test kills this process here
    return {"execution": execution.pk, "charge": answer["charge"], "retries": self.request.retries}


@idempotent_function(key="order_id")
def charge_once(order_id: int, bank_url: str) -> dict[str, Any]:
    from tests.testapp.models import Execution

    execution = Execution.objects.create(label=f"charge {order_id}")
    return {
        "execution": execution.pk,
        "charge": call_bank(bank_url, f"charge-{order_id}")["charge"],
    }


@app.task(bind=True, max_retries=3)
def charge_and_notify(self: Task[Any, Any], order_id: int, bank_url: str) -> dict[str, Any]:
    """Charge once, then notify: a notification that fails the first time retries the task."""
    charged = charge_once(order_id, bank_url)
    if self.request.retries == 0:
        raise self.retry(countdown=0)  # the notification failed, say
    return {**charged, "retries": self.request.retries}
