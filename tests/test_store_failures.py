"""The database store failing at each step after the claim, on a real connection.

The claim succeeded; then opening the shared transaction, releasing the key, or storing the
unknown outcome of a view that raised fails as a server going away would. The request still
gets an answer, nothing runs twice, and a key that could not be released waits out its lease.
Through the storage interface: a failing query raises ``StorageUnavailable``, a take-over
loses to a request that took the key first, and what a storage of one's own inherits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency import storage as storage_module
from django_idempotency.decorators import idempotent
from django_idempotency.mixins import IdempotencyMixin
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import (
    Claim,
    DatabaseStorage,
    Record,
    Storage,
    StorageUnavailable,
    StoredResponse,
)
from tests.factories import UserFactory
from tests.leases import expire_now
from tests.problems import is_problem
from tests.testapp.models import Execution
from tests.testapp.views import behave

pytestmark = pytest.mark.urls(__name__)

TABLE = IdempotencyKey._meta.db_table


@csrf_exempt
@idempotent(required=True)
def answer(request: HttpRequest) -> HttpResponse:
    return behave(json.loads(request.body or b"{}"), "answer")


class AnswerView(IdempotencyMixin, APIView):
    idempotency_required = True

    def post(self, request: Request) -> HttpResponse:
        return behave(dict(request.data), "answer")


class FailingView(IdempotencyMixin, APIView):
    idempotency_required = True

    def post(self, request: Request) -> HttpResponse:
        Execution.objects.create(label="failing")
        raise RuntimeError("the view failed")


urlpatterns = [
    path("answer/", answer),
    path("drf/answer/", AnswerView.as_view()),
    path("drf/failing/", FailingView.as_view()),
]


@contextmanager
def failing_queries(matches: Callable[[str], bool]) -> Iterator[None]:
    """Fail the queries ``matches`` picks as a server that went away would."""

    def refuse(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if matches(sql):
            raise OperationalError("server closed the connection unexpectedly")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse):
        yield


def on_the_table(verb: str) -> Callable[[str], bool]:
    return lambda sql: sql.startswith(verb) and TABLE in sql


@pytest.fixture
def client() -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(UserFactory.create())
    return client


def post(client: Client, url: str, payload: dict[str, Any] | None = None) -> Any:
    body = json.dumps(payload or {})
    return client.post(url, body, "application/json", headers={"Idempotency-Key": "k"})


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/answer/", "/drf/answer/"], ids=["decorator", "mixin"])
def test_transaction_cannot_open__is_503_the_view_never_runs_and_the_key_is_free(
    client: Client, url: str
) -> None:
    # Inside an open transaction (this test's), the shared transaction is a savepoint; the
    # claim's own savepoint succeeds, the next one fails.
    claimed: list[str] = []

    def savepoint_after_the_claim(sql: str) -> bool:
        if sql.startswith("INSERT") and TABLE in sql:
            claimed.append(sql)
        return bool(claimed) and sql.startswith("SAVEPOINT")

    with failing_queries(savepoint_after_the_claim):
        response = post(client, url)

    assert claimed, "the claim never ran; the test proves nothing"
    assert response.status_code == 503
    assert is_problem(response, "idempotency_store_unavailable")
    assert not Execution.objects.exists()
    assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_release_fails__the_answer_goes_out_and_the_key_waits_for_its_lease(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="django_idempotency.engine"),
        failing_queries(on_the_table("DELETE")),
    ):
        first = post(client, "/answer/", {"status": 503})

    assert first.status_code == 503  # the view's own answer, not stored
    assert "Could not release an idempotency key" in caplog.text
    assert IdempotencyKey.objects.get().state == IdempotencyKey.State.IN_FLIGHT
    retry = post(client, "/answer/", {"status": 503})
    assert retry.status_code == 409
    assert is_problem(retry, "idempotency_key_in_progress")
    assert not Execution.objects.exists()  # rolled back, and no retry ran it


@pytest.mark.django_db(transaction=True)
def test_unknown_outcome_cannot_be_stored__the_key_waits_for_its_lease(
    client: Client, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.IDEMPOTENCY_ATOMIC = False
    with (
        caplog.at_level(logging.WARNING, logger="django_idempotency.engine"),
        failing_queries(on_the_table("UPDATE")),
    ):
        first = post(client, "/drf/failing/")

    assert first.status_code == 500
    assert "Could not store the failed outcome" in caplog.text
    retry = post(client, "/drf/failing/")
    assert retry.status_code == 409
    assert Execution.objects.filter(label="failing").count() == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("operation", "verb"), [("get", "SELECT"), ("release", "DELETE")])
def test_storage_interface__a_failing_query_raises_storage_unavailable(
    operation: str, verb: str
) -> None:
    storage = DatabaseStorage()
    claim = storage.claim("scope", "k", "fp", lease=timedelta(minutes=1))
    assert isinstance(claim, Claim)
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: storage.get("scope", "k"),
        "release": lambda: storage.release(claim),
    }

    with failing_queries(on_the_table(verb)), pytest.raises(StorageUnavailable):
        calls[operation]()
    assert storage.get("scope", "k") is not None  # the record is untouched


def test_storage_module__names_no_other_storage() -> None:
    with pytest.raises(AttributeError, match="RedisStorage"):
        storage_module.RedisStorage  # noqa: B018


@pytest.mark.django_db(transaction=True)
def test_take_over__loses_to_a_request_that_took_the_key_first() -> None:
    # Between reading the dead record and taking it over, another request takes it: the
    # take-over changes nothing, and the claim reports the other request's live record.
    storage = DatabaseStorage()
    assert isinstance(storage.claim("scope", "k", "fp", lease=timedelta(minutes=1)), Claim)
    expire_now("k", storage=storage)
    raced: list[str] = []

    def another_request_first(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not raced and sql.startswith("UPDATE") and TABLE in sql:
            raced.append(sql)
            IdempotencyKey.objects.filter(key="k").update(
                token="t" * 32, expires_at=timezone.now() + timedelta(minutes=1)
            )
        return execute(sql, params, many, context)

    with connection.execute_wrapper(another_request_first):
        result = storage.claim("scope", "k", "fp", lease=timedelta(minutes=1))

    assert raced, "no take-over was attempted; the test proves nothing"
    assert isinstance(result, Record)
    assert result.token == "t" * 32


@pytest.mark.django_db(transaction=True)
def test_storage_interface__defaults_of_a_storage_that_keeps_no_transaction() -> None:
    # What a third-party storage inherits when it implements only the four operations.
    class MemoryStorage(Storage):
        def claim(self, scope: str, key: str, fingerprint: str, **options: Any) -> Claim:
            return Claim(scope, key, fingerprint, "token", timezone.now())

        def complete(self, claim: Claim, response: StoredResponse, **options: Any) -> None:
            return None

        def release(self, claim: Claim) -> bool:
            return True

        def get(self, scope: str, key: str) -> Record | None:
            return None

    storage = MemoryStorage()
    claim = storage.claim("scope", "k", "fp", lease=timedelta(minutes=1))

    assert storage.using is None
    assert storage.is_rollback_marked() is False
    with storage.atomic():
        pass
    assert claim.store_now() is None  # the claim did not read the store's clock
