"""After any failure between the claim and the stored response, the worker serves on (issue 7).

A view, its renderer, a signal receiver or another middleware fails: that request gets a
500, the transaction is closed, the key is left correct (released when the view's writes
rolled back, kept when its outcome is unknown), and the next requests on the same thread
and connection succeed.

A view whose success shares a transaction marked for rollback: its answer goes out, its key is
released. The database store fails after the claim, as a server going away would, while the
shared transaction opens, the key is released, or the unknown outcome of a view that raised is
stored: the request still gets an answer, nothing runs twice, and a key that could not be
released waits out its lease.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.models.signals import post_save
from django.test import Client, override_settings

from django_idempotency.models import IdempotencyKey
from django_idempotency.signals import idempotency_replayed
from django_idempotency.testing import close_thread_connections
from tests.factories import UserFactory
from tests.problems import is_problem
from tests.records import stored_records
from tests.settings import MIDDLEWARE
from tests.store_faults import failing_queries, on_the_table
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

ENTRY_POINTS = {
    "mixin": "/drf/required/",
    "middleware": "/plain/behave/",
    "decorator": "/decorated/behave/",
}


@pytest.fixture(params=list(ENTRY_POINTS))
def url(request: pytest.FixtureRequest, storage_backend: str, settings: Any) -> str:
    settings.IDEMPOTENCY_REQUIRED = True
    return ENTRY_POINTS[request.param]


@pytest.fixture
def client() -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(UserFactory.create())
    return client


def post(client: Client, url: str, payload: dict[str, Any], key: str) -> Any:
    return client.post(
        url, json.dumps(payload), content_type="application/json", headers={"Idempotency-Key": key}
    )


def assert_worker_serves_on(client: Client, url: str) -> None:
    """The connection left no transaction open, and new requests of every kind succeed."""
    assert not connection.in_atomic_block
    assert client.get("/drf/behave/").status_code == 200
    label = f"after-{uuid.uuid4()}"
    fresh = post(client, url, {"label": label}, key=f"k-{uuid.uuid4()}")
    assert fresh.status_code == 201, fresh.content
    assert Execution.objects.filter(label=label).count() == 1


def is_rolled_back_and_released(storage_backend: str) -> bool:
    """Whether a failed run's writes vanished and its key was freed (DatabaseStorage)."""
    return storage_backend == "database"


def test_render_error__in_a_mixin_response_leaves_the_worker_serving(
    client: Client, storage_backend: str
) -> None:
    url, label = "/drf/required/", f"render-{uuid.uuid4()}"

    failed = post(client, url, {"label": label, "unrenderable": True}, key="k")

    assert failed.status_code == 500
    assert_worker_serves_on(client, url)
    retry = post(client, url, {"label": label, "unrenderable": True}, key="k")
    if is_rolled_back_and_released(storage_backend):
        assert Execution.objects.filter(label=label).count() == 0
        assert retry.status_code == 500  # it ran again, and failed again, rolled back
    else:
        # Without a shared transaction the first run's effects stand: never run again.
        assert Execution.objects.filter(label=label).count() == 1
        assert retry["Idempotent-Replayed"] == "true"


def test_exception__in_the_view_leaves_the_worker_serving(client: Client, url: str) -> None:
    failed = post(client, url, {"label": "boom", "raise": True}, key="k")

    assert failed.status_code == 500
    assert_worker_serves_on(client, url)


@pytest.fixture
def failing_receiver() -> Iterator[Callable[..., None]]:
    def receiver(**kwargs: Any) -> None:
        raise RuntimeError("a receiver failed")

    yield receiver
    post_save.disconnect(receiver, sender=Execution)
    idempotency_replayed.disconnect(receiver)


def test_signal_receiver__failing_inside_the_view_leaves_the_worker_serving(
    client: Client, url: str, failing_receiver: Callable[..., None]
) -> None:
    post_save.connect(failing_receiver, sender=Execution)
    failed = post(client, url, {"label": "signal"}, key="k")
    post_save.disconnect(failing_receiver, sender=Execution)

    assert failed.status_code == 500
    assert_worker_serves_on(client, url)


def test_signal_receiver__failing_on_replay_leaves_the_worker_serving(
    client: Client, url: str, failing_receiver: Callable[..., None]
) -> None:
    first = post(client, url, {"label": "replayed"}, key="k")
    idempotency_replayed.connect(failing_receiver)
    failed = post(client, url, {"label": "replayed"}, key="k")
    idempotency_replayed.disconnect(failing_receiver)

    assert first.status_code == 201
    assert failed.status_code == 500
    assert_worker_serves_on(client, url)
    assert post(client, url, {"label": "replayed"}, key="k").content == first.content


def failing_middleware(get_response: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A middleware inside the idempotency middleware that fails on the way out."""

    def middleware(request: Any) -> Any:
        response = get_response(request)
        if request.headers.get("X-Fail-After-View"):
            raise RuntimeError("a middleware failed")
        return response

    return middleware


def test_inner_middleware__failing_after_the_view_leaves_the_worker_serving(
    client: Client, url: str, storage_backend: str
) -> None:
    label = f"inner-{uuid.uuid4()}"
    with override_settings(MIDDLEWARE=[*MIDDLEWARE, f"{__name__}.failing_middleware"]):
        failed = client.post(
            url,
            json.dumps({"label": label}),
            content_type="application/json",
            headers={"Idempotency-Key": "k", "X-Fail-After-View": "1"},
        )
        assert failed.status_code == 500
        assert_worker_serves_on(client, url)


def test_store__never_keeps_a_failed_run_half_written(
    client: Client, url: str, storage_backend: str
) -> None:
    post(client, url, {"label": "half", "raise": True}, key="k")

    states = {state for _scope, key, state in stored_records() if key == "k"}
    if is_rolled_back_and_released(storage_backend):
        assert states == set()  # released: a retry runs again
    else:
        assert states == {"completed"}  # the unknown outcome is stored (DESIGN §4)


@pytest.mark.asyncio
async def test_exception__in_an_async_view_leaves_the_async_middleware_serving(
    settings: Any,
) -> None:
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    settings.IDEMPOTENCY_REQUIRED = True
    async_client = AsyncClient(raise_request_exception=False)
    await async_client.aforce_login(await sync_to_async(UserFactory.create)())

    async def send(payload: dict[str, Any], key: str) -> Any:
        return await async_client.post(
            "/async/behave/",
            payload,
            content_type="application/json",
            headers={"Idempotency-Key": key},
        )

    try:
        failed = await send({"label": "async-boom", "raise": True}, "k")
        fresh = await send({"label": "async-after"}, "k2")
        retry = await send({"label": "async-boom", "raise": True}, "k")

        assert failed.status_code == 500
        assert fresh.status_code == 201
        assert retry.status_code == 500  # released, so it ran again (and failed again)
        assert await sync_to_async(lambda: connection.in_atomic_block)() is False
        assert await sync_to_async(Execution.objects.filter(label="async-boom").count)() == 0
    finally:
        # Close the connection asgiref's worker thread opened, or the test database
        # cannot be dropped.
        await sync_to_async(close_thread_connections)()


# A view that dooms its own transaction


@pytest.mark.parametrize(
    "url", [ENTRY_POINTS["decorator"], ENTRY_POINTS["mixin"]], ids=["decorator", "mixin"]
)
def test_success_in_a_doomed_transaction__goes_out_but_frees_the_key(
    client: Client, url: str
) -> None:
    first = post(client, url, {"label": "doomed", "rollback": True}, key="k")

    assert first.status_code == 201
    assert Execution.objects.filter(label="doomed").count() == 0  # its write did not stay
    assert not IdempotencyKey.objects.exists()  # so no retry is answered from it
    retry = post(client, url, {"label": "doomed", "rollback": True}, key="k")
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry


# The database store failing at each step after the claim


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url", [ENTRY_POINTS["decorator"], ENTRY_POINTS["mixin"]], ids=["decorator", "mixin"]
)
def test_transaction_cannot_open__is_503_the_view_never_runs_and_the_key_is_free(
    client: Client, url: str
) -> None:
    # Inside an open transaction (this test's), the shared transaction is a savepoint; the
    # claim's own savepoint succeeds, the next one fails.
    claimed: list[str] = []

    def savepoint_after_the_claim(sql: str) -> bool:
        if on_the_table("INSERT")(sql):
            claimed.append(sql)
        return bool(claimed) and sql.startswith("SAVEPOINT")

    with failing_queries(savepoint_after_the_claim):
        response = post(client, url, {}, key="k")

    assert claimed, "the claim never ran; the test proves nothing"
    assert response.status_code == 503
    assert is_problem(response, "idempotency_store_unavailable")
    assert not Execution.objects.exists()
    assert not IdempotencyKey.objects.exists()


def test_release_fails__the_answer_goes_out_and_the_key_waits_for_its_lease(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    url = ENTRY_POINTS["decorator"]
    with (
        caplog.at_level(logging.WARNING, logger="django_idempotency.outcomes"),
        failing_queries(on_the_table("DELETE")),
    ):
        first = post(client, url, {"status": 503}, key="k")

    assert first.status_code == 503  # the view's own answer, not stored
    assert "Could not release an idempotency key" in caplog.text
    assert IdempotencyKey.objects.get().state == IdempotencyKey.State.IN_FLIGHT
    retry = post(client, url, {"status": 503}, key="k")
    assert retry.status_code == 409
    assert is_problem(retry, "idempotency_key_in_progress")
    assert not Execution.objects.exists()  # rolled back, and no retry ran it


def test_unknown_outcome_cannot_be_stored__the_key_waits_for_its_lease(
    client: Client, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.IDEMPOTENCY_ATOMIC = False
    url, failing = ENTRY_POINTS["mixin"], {"label": "failing", "raise": True}
    with (
        caplog.at_level(logging.WARNING, logger="django_idempotency.outcomes"),
        failing_queries(on_the_table("UPDATE")),
    ):
        first = post(client, url, failing, key="k")

    assert first.status_code == 500
    assert "Could not store the failed outcome" in caplog.text
    retry = post(client, url, failing, key="k")
    assert retry.status_code == 409
    assert Execution.objects.filter(label="failing").count() == 1
