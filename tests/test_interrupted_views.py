"""A view stopped by a ``BaseException`` leaves its key free and its writes rolled back.

Django's handler turns a view's ``Exception`` into a 500 response before the middleware sees
it, but not a ``BaseException``: gunicorn's timeout for a sync worker raises ``SystemExit``
inside the view, Ctrl-C raises ``KeyboardInterrupt``, and an async view whose client went away
is cancelled (``asyncio.CancelledError``). The middleware, ``@idempotent`` and the mixin then
abort the execution on the way out: the transaction the view shared with its key is rolled
back and the key released, so the client's retry runs (DESIGN §4). Without atomic mode there
is no transaction to roll back: the key keeps an unknown outcome. A request the layer does not
cover is interrupted as if the layer were absent.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from django_idempotency.models import IdempotencyKey
from django_idempotency.testing import close_thread_connections
from tests.factories import UserFactory
from tests.problems import is_problem
from tests.testapp.models import Execution

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.testapp.interrupt_urls"),
]


@pytest.fixture
def client() -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(UserFactory.create())
    return client


def post(client: Client, url: str, key: str) -> Any:
    return client.post(url, {}, content_type="application/json", headers={"Idempotency-Key": key})


@pytest.mark.parametrize("url", ["/plain/", "/decorated/", "/mixin/"])
def test_interrupted_view__rolls_back_and_frees_its_key(client: Client, url: str) -> None:
    with pytest.raises(SystemExit):
        post(client, url, str(uuid.uuid4()))

    assert not Execution.objects.exists()
    assert not IdempotencyKey.objects.exists()  # free for the client's retry


def test_interrupted_view__without_atomic_mode_stores_an_unknown_outcome(
    client: Client, settings: Any
) -> None:
    settings.IDEMPOTENCY_ATOMIC = False
    with pytest.raises(SystemExit):
        post(client, "/decorated/", "k")

    retry = post(client, "/decorated/", "k")

    assert Execution.objects.filter(label="interrupted").count() == 1
    assert retry.status_code == 500
    assert retry["Idempotent-Replayed"] == "true"
    assert is_problem(retry, "idempotency_outcome_unknown")


def test_interrupted_request_the_layer_does_not_cover__propagates_untouched(
    client: Client,
) -> None:
    with pytest.raises(SystemExit):
        client.get("/decorated/", headers={"Idempotency-Key": "k"})  # a safe method

    assert Execution.objects.filter(label="interrupted").count() == 1  # nothing rolled back
    assert not IdempotencyKey.objects.exists()


@pytest.mark.asyncio
async def test_cancelled_async_view__rolls_back_and_frees_its_key(async_client: Any) -> None:
    await async_client.aforce_login(await sync_to_async(UserFactory.create)())
    try:
        with pytest.raises(asyncio.CancelledError):
            await async_client.post(
                "/async/cancelled/",
                {},
                content_type="application/json",
                headers={"Idempotency-Key": "k"},
            )

        assert not await sync_to_async(Execution.objects.exists)()
        assert not await sync_to_async(IdempotencyKey.objects.exists)()
    finally:
        # Close the connection asgiref's worker thread opened, or the test database
        # cannot be dropped.
        await sync_to_async(close_thread_connections)()
