"""ATOMIC_REQUESTS: the claim commits before the view's transaction, on real connections."""

from __future__ import annotations

import json
import threading
import time
import uuid
from typing import Any

import pytest
from django.db import connection, connections
from django.test import Client

from django_idempotency.models import IdempotencyKey
from tests.testapp import views
from tests.testapp.models import Execution

pytestmark = [pytest.mark.server_db, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("url", ["/drf/required/", "/decorated/behave/"])
def test_atomic_requests__claim_is_visible_while_the_view_runs(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)
    hold = f"hold-{uuid.uuid4()}"
    release = views.HOLDS[hold] = threading.Event()
    body = json.dumps({"label": "slow", "hold": hold})
    # One caller for both requests, scoped by the header's hash (DRF authenticates nothing).
    headers = {"Idempotency-Key": "k", "Authorization": "Bearer atomic-caller"}
    results: dict[str, Any] = {}

    def original() -> None:
        try:
            results["first"] = Client().post(
                url, body, content_type="application/json", headers=headers
            )
        finally:
            connection.close()

    thread = threading.Thread(target=original)
    thread.start()
    deadline = time.monotonic() + 5
    while not IdempotencyKey.objects.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    # The view still waits inside its transaction; the claim must already be committed,
    # or this duplicate would not see it and would run the view again.
    in_flight = IdempotencyKey.objects.get()
    duplicate = Client().post(url, body, content_type="application/json", headers=headers)
    release.set()
    thread.join(10)

    assert in_flight.state == IdempotencyKey.State.IN_FLIGHT
    assert duplicate.status_code == 409
    assert results["first"].status_code == 201
    assert Execution.objects.filter(label="slow").count() == 1
    assert IdempotencyKey.objects.get().state == IdempotencyKey.State.COMPLETED
