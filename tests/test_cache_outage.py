"""Redis outages seen through the entry points: fail closed, never run unprotected, never 500.

An unreachable Redis from the start (503, or fail-open) is a case of test_behaviour.py's
matrix; here Redis goes away while the app runs.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from django.test import Client

from django_idempotency.storage import CacheStorage
from tests.redis_servers import RedisServer
from tests.testapp.models import Execution

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

ENTRY_POINTS = ["/drf/required/", "/plain/behave/", "/decorated/behave/"]


@pytest.fixture(autouse=True)
def _cache_storage(settings: Any) -> None:
    settings.IDEMPOTENCY_STORAGE = "django_idempotency.storage.CacheStorage"
    settings.IDEMPOTENCY_CACHE_ALIAS = "idempotency"
    settings.IDEMPOTENCY_REQUIRED = True


def post(url: str, payload: dict[str, Any], key: str) -> Any:
    # One caller throughout, known to every entry point by the header's hash.
    headers = {"Idempotency-Key": key, "Authorization": "Bearer outage-caller"}
    return Client(raise_request_exception=False).post(
        url, json.dumps(payload), content_type="application/json", headers=headers
    )


@pytest.mark.parametrize("url", ENTRY_POINTS)
def test_redis_stopped_mid_run__fails_closed_then_recovers(
    private_redis: RedisServer, url: str
) -> None:
    key = f"k-{uuid.uuid4()}"
    first = post(url, {"label": "pay"}, key)
    private_redis.stop()
    during = post(url, {"label": "pay"}, key)
    other_key = post(url, {"label": "pay"}, f"other-{uuid.uuid4()}")
    private_redis.start()
    fresh = post(url, {"label": "pay"}, f"fresh-{uuid.uuid4()}")

    assert first.status_code == 201
    assert during.status_code == other_key.status_code == 503
    assert fresh.status_code == 201  # the server came back empty: a new key runs
    assert Execution.objects.filter(label="pay").count() == 2


def test_redis_stopped_during_the_view__answers_the_view_and_never_500s(
    private_redis: RedisServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    original_complete = CacheStorage.complete

    def complete_after_outage(self: CacheStorage, *args: Any, **kwargs: Any) -> None:
        private_redis.stop()  # Redis goes away after the view ran, before the response is kept
        original_complete(self, *args, **kwargs)

    monkeypatch.setattr(CacheStorage, "complete", complete_after_outage)

    with caplog.at_level(logging.ERROR, logger="django_idempotency.outcomes"):
        response = post("/plain/behave/", {"label": "pay"}, "k")

    assert response.status_code == 201
    assert "Could not store the response" in caplog.text
    assert Execution.objects.count() == 1
