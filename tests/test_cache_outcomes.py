"""Unknown outcomes on CacheStorage: a failed view's key stays in flight until its lease ends.

CacheStorage shares no transaction with the view, so a view that failed (a 5xx, or an
exception) may have had its effects. With ``IDEMPOTENCY_STORE_SERVER_ERRORS = False`` the
failure is not replayed, but the key must not be freed either: a retry gets 409 while the
lease lasts, and runs again only after it (DESIGN §2.1, §4). Through every entry point, sync
and async; requests are authenticated with HTTP Basic.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import pytest
from django.test import AsyncClient, Client
from django_redis import get_redis_connection  # type: ignore[import-untyped]

from tests.request_threads import request_thread
from tests.testapp.models import Execution

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

ENTRY_POINTS = {
    "mixin": "/drf/required/",
    "middleware": "/plain/behave/",
    "decorator": "/decorated/behave/",
    "async middleware": "/async/behave/",
}
OUTCOMES: dict[str, dict[str, Any]] = {"5xx": {"status": 500}, "exception": {"raise": True}}


@pytest.fixture(autouse=True)
def _cache_storage(settings: Any, redis_cache: object) -> None:
    settings.IDEMPOTENCY_STORAGE = "django_idempotency.storage.CacheStorage"
    settings.IDEMPOTENCY_CACHE_ALIAS = "idempotency"
    settings.IDEMPOTENCY_REQUIRED = True
    settings.IDEMPOTENCY_STORE_SERVER_ERRORS = False


@pytest.fixture
def authorization(django_user_model: Any) -> str:
    django_user_model.objects.create_user("payer", password="pw")
    return "Basic " + base64.b64encode(b"payer:pw").decode()


def send(url: str, payload: dict[str, Any], key: str, authorization: str) -> Any:
    headers = {"Idempotency-Key": key, "Authorization": authorization}
    body = json.dumps(payload)
    if not url.startswith("/async/"):
        client = Client(raise_request_exception=False)
        return client.post(url, body, content_type="application/json", headers=headers)

    async def send_async() -> Any:
        async with request_thread():
            return await AsyncClient(raise_request_exception=False).post(
                url, body, content_type="application/json", headers=headers
            )

    return asyncio.run(send_async())


def end_every_lease() -> None:
    """Move every in-flight record's expiry into the past, as Redis's clock would."""
    client = get_redis_connection("idempotency")
    in_flight = [
        name
        for name in client.scan_iter(match="*idempotency:*")
        if client.hget(name, "state") == b"in_flight"
    ]
    for name in in_flight:
        client.pexpire(name, 1)
    while client.exists(*in_flight):
        pass  # Redis drops each one within the millisecond


@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_unknown_outcome_not_stored__retry_gets_409_until_the_lease_ends(
    authorization: str, entry: str, outcome: str
) -> None:
    url, label, key = ENTRY_POINTS[entry], f"pay-{uuid.uuid4()}", f"key-{uuid.uuid4()}"
    payload = {"label": label, **OUTCOMES[outcome]}

    first = send(url, payload, key, authorization)
    retry = send(url, payload, key, authorization)

    assert first.status_code == 500
    assert retry.status_code == 409
    assert "Idempotent-Replayed" not in retry
    assert Execution.objects.filter(label=label).count() == 1
    # After the lease a retry takes the key over: that rerun is the documented window.
    end_every_lease()
    rerun = send(url, payload, key, authorization)
    assert (rerun.status_code, rerun.has_header("Idempotent-Replayed")) == (500, False)
    assert Execution.objects.filter(label=label).count() == 2
