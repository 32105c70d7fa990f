"""Idempotent functions on each storage: a key runs once, its result is returned after.

With DatabaseStorage the function's writes and its stored result commit together; an
exception rolls them back and frees the key. Real databases and Redis (test_behaviour's
storage matrix).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from django_idempotency.functions import (
    CallInProgress,
    CallInTransaction,
    CallMismatch,
    idempotent_function,
    once,
)
from django_idempotency.testing import close_thread_connections
from tests.live_server import ROOT
from tests.records import stored_records
from tests.test_behaviour import storage  # noqa: F401  (the storage matrix)
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


@idempotent_function(key="order_id")
def charge(order_id: int, amount: Decimal) -> dict[str, Any]:
    """A payment: one row, and a result that says what was done."""
    execution = Execution.objects.create(label=f"charge {order_id}")
    return {"charged": amount, "execution": execution.pk}


@idempotent_function(key=lambda order_id, amount: f"refund-{order_id}")
def refund(order_id: int, amount: Decimal) -> str:
    Execution.objects.create(label=f"refund {order_id}")
    raise RuntimeError("the bank said no")


def test_a_second_call__returns_the_stored_result_without_running() -> None:
    first = charge(42, Decimal("10.50"))
    again = charge(42, Decimal("10.50"))

    assert again == first == {"charged": "10.50", "execution": first["execution"]}
    assert Execution.objects.filter(label="charge 42").count() == 1
    assert [(scope, key, state) for scope, key, state in stored_records()] == [
        ("function:tests.test_functions.charge", "42", "completed")
    ]


def test_another_key__runs() -> None:
    charge(1, Decimal("1"))
    charge(2, Decimal("1"))

    assert Execution.objects.count() == 2


def test_the_same_key_with_other_arguments__is_a_mismatch() -> None:
    charge(42, Decimal("10.50"))

    with pytest.raises(CallMismatch):
        charge(42, Decimal("99.00"))
    assert Execution.objects.count() == 1


def test_an_exception__frees_the_key_and_a_retry_runs_again(storage: str) -> None:  # noqa: F811
    with pytest.raises(RuntimeError):
        refund(7, Decimal("5"))
    with pytest.raises(RuntimeError):
        refund(7, Decimal("5"))

    assert stored_records() == []
    # With the database, the function's row rolled back with its failure; Redis cannot.
    expected = 0 if storage == "database" else 2
    assert Execution.objects.filter(label="refund 7").count() == expected


def test_a_call_while_the_first_runs__is_in_progress_or_waits_for_it() -> None:
    started, finish = threading.Event(), threading.Event()
    results: list[Any] = []

    def slow(order_id: int) -> str:
        started.set()
        assert finish.wait(30)
        return f"done {order_id}"

    def first() -> None:
        try:
            results.append(once("k", slow, 1, scope="slow"))
        finally:
            close_thread_connections()

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(30)
    try:
        with pytest.raises(CallInProgress) as in_progress:
            once("k", slow, 1, scope="slow", lease=120)
        # The first call's lease (the default 60 s, not this call's) ends within that.
        assert timedelta(seconds=1) < in_progress.value.retry_after <= timedelta(seconds=60)
    finally:
        finish.set()
        thread.join(30)
    # Once it finished, a waiting call gets its result.
    assert once("k", slow, 1, scope="slow", wait_timeout=5) == "done 1"
    assert results == ["done 1"]


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_inside_the_callers_transaction__is_refused(storage_backend: str) -> None:
    # Its claim could not commit first: a duplicate would wait on the row, not learn.
    with transaction.atomic(), pytest.raises(CallInTransaction, match="outside"):
        charge(42, Decimal("10.50"))
    assert stored_records() == []


def send_invoice(number: str) -> str:
    Execution.objects.create(label="invoice")
    return f"sent {number}"


def test_once__a_key_computed_at_run_time() -> None:
    key = "invoice-2026-12"
    assert once(key, send_invoice, "INV-1") == "sent INV-1"
    assert once(key, send_invoice, "INV-1") == "sent INV-1"
    assert Execution.objects.filter(label="invoice").count() == 1
    # Scoped by the function, so requests' keys and other functions' never meet it.
    ((scope, stored_key, _state),) = stored_records()
    assert scope == "function:tests.test_functions.send_invoice"
    assert stored_key == key


# Async functions


@idempotent_function(key="order_id")
async def charge_async(order_id: int, amount: Decimal) -> dict[str, Any]:
    execution = await Execution.objects.acreate(label=f"async charge {order_id}")
    return {"charged": amount, "execution": execution.pk}


def test_async__a_second_call_returns_the_stored_result_without_running() -> None:
    async def twice() -> tuple[Any, Any]:
        return await charge_async(9, Decimal("3.10")), await charge_async(9, Decimal("3.10"))

    first, again = asyncio.run(in_thread_sensitive_context(twice))

    assert first == again == {"charged": "3.10", "execution": first["execution"]}
    assert Execution.objects.filter(label="async charge 9").count() == 1


def test_async__a_mismatch_and_a_failure_are_told_apart() -> None:
    @idempotent_function(key="number", scope="fails")
    async def fails(number: int) -> None:
        raise RuntimeError("no")

    async def calls() -> None:
        await charge_async(9, Decimal("3.10"))
        with pytest.raises(CallMismatch):
            await charge_async(9, Decimal("1.00"))
        with pytest.raises(RuntimeError):
            await fails(1)
        with pytest.raises(RuntimeError):  # freed: it runs again
            await fails(1)

    asyncio.run(in_thread_sensitive_context(calls))

    assert [key for _scope, key, _state in stored_records()] == ["9"]


async def in_thread_sensitive_context(coroutine: Any) -> Any:
    # The ORM's async methods and the storage's calls run on threads with their own
    # connections; close them, so the test database can be flushed after the test.
    from asgiref.sync import sync_to_async

    try:
        return await coroutine()
    finally:
        await sync_to_async(close_thread_connections)()


# Under concurrency


@pytest.mark.server_db
@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_concurrent_calls_with_one_key__run_once_and_all_get_its_result(
    storage_backend: str,
) -> None:
    # Twelve threads, each on its own PostgreSQL connection, call at once and wait for the
    # result: one runs (one row), every one returns what it stored.
    count = 12
    barrier = threading.Barrier(count)

    def pay(order_id: int, amount: Decimal) -> dict[str, Any]:
        execution = Execution.objects.create(label=f"charge {order_id}")
        return {"charged": amount, "execution": execution.pk}

    results: list[Any] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def call() -> None:
        try:
            barrier.wait(30)
            result = once("order-77", pay, 77, Decimal("5.00"), scope="race", wait_timeout=20)
            with lock:
                results.append(result)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            close_thread_connections()

    threads = [threading.Thread(target=call) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors, errors
    assert len(results) == count
    assert all(result == results[0] for result in results)
    assert Execution.objects.filter(label="charge 77").count() == 1


def test_with_the_layer_switched_off__every_call_runs(settings: Any) -> None:
    settings.IDEMPOTENCY_DISABLED = True

    charge(42, Decimal("10.50"))
    charge(42, Decimal("10.50"))

    assert Execution.objects.filter(label="charge 42").count() == 2
    assert stored_records() == []


# Operators: the admin and the purge


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_the_admin__tells_function_records_from_request_records(
    storage_backend: str, admin_client: Any
) -> None:
    from django.urls import reverse

    from tests.factories import IdempotencyKeyFactory

    charge(42, Decimal("10.50"))
    IdempotencyKeyFactory.create(key="a-request", method="POST", path="/payments/")
    changelist = reverse("admin:django_idempotency_idempotencykey_changelist")

    calls = admin_client.get(changelist, {"method": "CALL"}).content.decode()
    requests = admin_client.get(changelist, {"method": "POST"}).content.decode()

    assert "function call" in admin_client.get(changelist).content.decode()  # the filter
    assert "tests.test_functions.charge" in calls
    assert "a-request" not in calls
    assert "a-request" in requests
    assert "tests.test_functions.charge" not in requests


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_the_purge__deletes_expired_function_records_too(storage_backend: str) -> None:
    from io import StringIO

    from django.core.management import call_command

    from tests.leases import expire_now

    charge(42, Decimal("10.50"))
    expire_now("42")

    call_command("purge_idempotency_keys", "--grace", "0", stdout=StringIO())

    assert stored_records() == []


@pytest.mark.django_db  # inside TestCase's transactions, as Django's TestCase runs a test
@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_under_a_testcase__runs_as_outside_any_transaction_but_not_under_the_callers(
    storage_backend: str,
) -> None:
    first = charge(42, Decimal("10.50"))

    assert charge(42, Decimal("10.50")) == first
    assert Execution.objects.count() == 1
    with transaction.atomic(), pytest.raises(CallInTransaction):
        charge(43, Decimal("1.00"))


@pytest.mark.server_db
@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_concurrent_calls_from_separate_processes__run_once_and_all_get_its_result(
    storage_backend: str, tmp_path: Path
) -> None:
    # Six Python processes, each with its own Django and PostgreSQL connection, released at
    # once by a file: one runs (one row), every one prints what it stored.
    from django.db import connection

    count = 6
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.live_settings",
        "IDEMPOTENCY_TEST_DATABASE": os.environ.get("IDEMPOTENCY_TEST_DATABASE", "postgres"),
        "IDEMPOTENCY_LIVE_DATABASE_NAME": connection.settings_dict["NAME"],
        "IDEMPOTENCY_LIVE_STORAGE": "django_idempotency.storage.DatabaseStorage",
        "IDEMPOTENCY_LIVE_LEASE": "60",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "tests.call_process", str(tmp_path)]
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        (tmp_path / "go").touch()
        outputs = [process.communicate(timeout=60)[0] for process in processes]
    finally:
        for process in processes:
            process.kill()

    assert [process.returncode for process in processes] == [0] * count
    results = [json.loads(output) for output in outputs]
    assert all(result == results[0] for result in results)
    assert Execution.objects.filter(label="process charge 88").count() == 1
    assert results[0]["execution"] == Execution.objects.get(label="process charge 88").pk
