"""Function calls report their outcomes as requests do: signals, metrics, log lines.

The same signals (with ``request=None``, method ``CALL`` and the function's dotted name as
the view), so the metrics count calls beside requests, and the log says when a task's key
was taken over after its worker died. Both storages (test_behaviour's storage matrix).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from django_idempotency import metrics
from django_idempotency.calls import Call
from django_idempotency.functions import CallInProgress, CallMismatch, idempotent_function, once
from django_idempotency.outcomes import Outcome
from django_idempotency.testing import close_thread_connections, outcomes
from tests.leases import expire_now
from tests.test_behaviour import (
    storage,  # noqa: F401  (the storage matrix)
)
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

NAME = "tests.test_function_outcomes.charge"


@idempotent_function(key="order_id")
def charge(order_id: int, amount: Decimal) -> dict[str, Any]:
    Execution.objects.create(label=f"charge {order_id}")
    return {"charged": amount}


@idempotent_function(key="order_id")
def decline(order_id: int) -> None:
    raise RuntimeError("declined")


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    metrics.install(registry)
    yield registry
    metrics.uninstall(registry)


def test_a_run_a_replay_a_mismatch_and_a_failure__are_each_reported(storage: str) -> None:  # noqa: F811
    with outcomes() as seen:
        charge(1, Decimal("5"))
        charge(1, Decimal("5"))
        with pytest.raises(CallMismatch):
            charge(1, Decimal("6"))
        with pytest.raises(RuntimeError):
            decline(2)

    assert seen.outcomes == [
        Outcome.CLAIMED,
        Outcome.COMPLETED,
        Outcome.REPLAYED,
        Outcome.MISMATCH,
        Outcome.CLAIMED,
        Outcome.RELEASED,
    ]
    assert seen.runs == 2


def test_a_call_in_progress__is_reported_once_when_it_gives_up(storage: str) -> None:  # noqa: F811
    started, finish = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        assert finish.wait(30)
        return "done"

    def first() -> None:
        try:
            once("k", slow, scope="slow")
        finally:
            close_thread_connections()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert started.wait(30)
        with outcomes() as seen, pytest.raises(CallInProgress):
            once("k", slow, scope="slow", wait_timeout=0.2)  # polls, then gives up
    finally:
        finish.set()
        thread.join(30)

    assert seen.outcomes == [Outcome.IN_PROGRESS]


def test_signals__carry_the_call_as_method_and_view_and_no_request(storage: str) -> None:  # noqa: F811
    heard: list[dict[str, Any]] = []

    def listen(sender: Any, **kwargs: Any) -> None:
        heard.append(kwargs)

    from django_idempotency.signals import idempotency_claimed

    idempotency_claimed.connect(listen, weak=False, dispatch_uid="test-call-signal")
    try:
        charge(3, Decimal("1"))
    finally:
        idempotency_claimed.disconnect(dispatch_uid="test-call-signal")

    assert len(heard) == 1
    assert heard[0]["request"] is None
    assert (heard[0]["method"], heard[0]["view"]) == ("CALL", NAME)
    assert (heard[0]["key"], heard[0]["scope"]) == ("3", f"function:{NAME}")
    assert heard[0]["operation"] == "claim"
    assert heard[0]["store_seconds"] >= 0


def test_metrics__count_calls_by_outcome_with_the_function_as_view(
    storage: str,  # noqa: F811
    registry: CollectorRegistry,
) -> None:
    charge(4, Decimal("1"))
    charge(4, Decimal("1"))

    def count(outcome: str) -> float | None:
        labels = {"outcome": outcome, "method": "CALL", "view": NAME}
        return registry.get_sample_value("django_idempotency_outcomes_total", labels)

    assert (count("claimed"), count("completed"), count("replayed")) == (1, 1, 1)


@pytest.mark.parametrize(  # Redis tells a takeover apart with tombstones only
    "storage_backend",
    ["database", pytest.param("cache-tombstones", marks=pytest.mark.redis)],
    indirect=True,
)
def test_a_key_taken_over_after_its_lease__is_a_warning_in_the_log(
    storage_backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A worker that died holding the key: its claim stays in flight; then its lease ends.
    Call.prepare("order-9", str, (), {}, "dies", None, None, None, None).claim()
    expire_now("order-9")

    with caplog.at_level(logging.DEBUG, logger="django_idempotency.outcomes"):
        assert once("order-9", str, scope="dies") == ""

    lines = [r for r in caplog.records if r.name == "django_idempotency.outcomes"]
    first = lines[0]
    assert (first.levelno, first.idempotency["outcome"]) == (logging.WARNING, "taken_over")  # type: ignore[attr-defined]
    assert "CALL" in first.getMessage()
    assert "the function runs again" in first.getMessage()  # a call's words, not a view's
    assert "order-9" not in first.getMessage()  # the key's hash, never the key
