"""Requests at the edges of the request cycle, through each entry point.

Through the middleware, ``@idempotent`` and the mixin: a view interrupted by a
``BaseException`` that Django's handler lets through (a client gone away), a body over
Django's upload limit, a view that marks its own transaction for rollback, per-view
``replay_headers`` and ``storage`` options, a principal without a primary key, and an
unkeyed mixin request under ``ATOMIC_REQUESTS``. The views and their URLconf live here.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from rest_framework import authentication
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency.decorators import idempotent
from django_idempotency.mixins import IdempotencyMixin
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage import DatabaseStorage
from tests.factories import UserFactory
from tests.problems import is_problem
from tests.testapp.models import Execution
from tests.testapp.views import behave

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls(__name__)]

DATABASE_STORAGE = "django_idempotency.storage.DatabaseStorage"


class ClientWentAway(BaseException):
    """Not an ``Exception``: Django's handler does not turn it into a 500, it propagates."""


def _payload(request: HttpRequest) -> dict[str, Any]:
    data = json.loads(request.body or b"{}")
    return data if isinstance(data, dict) else {}


@csrf_exempt
@idempotent(required=True)
def interrupted(request: HttpRequest) -> HttpResponse:
    Execution.objects.create(label="interrupted")
    raise ClientWentAway


@csrf_exempt
@idempotent(required=True)
async def cancelled(request: HttpRequest) -> HttpResponse:
    await sync_to_async(Execution.objects.create)(label="cancelled")
    raise asyncio.CancelledError


@csrf_exempt
@idempotent(required=True)
def doomed(request: HttpRequest) -> HttpResponse:
    """Succeed after marking the shared transaction for rollback: its write will not stay."""
    response = behave(_payload(request), "doomed")
    transaction.set_rollback(True)
    return response


@csrf_exempt
@idempotent(required=True, replay_headers=["X-Not-Allow-Listed"])
def more_headers(request: HttpRequest) -> HttpResponse:
    return behave(_payload(request), "more-headers")


@csrf_exempt
@idempotent(required=True, storage=DATABASE_STORAGE)
def own_storage(request: HttpRequest) -> HttpResponse:
    return behave(_payload(request), "own-storage")


@csrf_exempt
@idempotent(required=True, storage=DatabaseStorage())
def own_storage_instance(request: HttpRequest) -> HttpResponse:
    return behave(_payload(request), "own-storage-instance")


class DoomedView(IdempotencyMixin, APIView):
    idempotency_required = True

    def post(self, request: Request) -> HttpResponse:
        response = behave({}, "doomed")
        transaction.set_rollback(True)
        return response


class OptionalKeyView(IdempotencyMixin, APIView):
    """Keys optional: an unkeyed request runs as it would without the mixin."""

    def post(self, request: Request) -> HttpResponse:
        return behave({}, "optional")


class ServicePrincipal:
    """What some authentication classes make up: authenticated, but no row, so no ``pk``."""

    is_authenticated = True
    is_active = True
    pk = None


class ServiceAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Any, Any]:
        return ServicePrincipal(), None


class ServiceView(IdempotencyMixin, APIView):
    authentication_classes = [ServiceAuthentication]
    permission_classes: list[Any] = []
    idempotency_required = True

    def post(self, request: Request) -> HttpResponse:
        return behave({}, "service")


urlpatterns = [
    path("interrupted/", interrupted),
    path("cancelled/", cancelled),
    path("doomed/", doomed),
    path("drf/doomed/", DoomedView.as_view()),
    path("drf/optional/", OptionalKeyView.as_view()),
    path("drf/service/", ServiceView.as_view()),
    path("more-headers/", more_headers),
    path("own-storage/", own_storage),
    path("own-storage-instance/", own_storage_instance),
]


@pytest.fixture
def client() -> Client:
    client = Client(raise_request_exception=False)
    client.force_login(UserFactory.create())
    return client


def post(client: Client, url: str, key: str | None = "k", payload: Any = None) -> Any:
    headers = {} if key is None else {"Idempotency-Key": key}
    return client.post(url, json.dumps(payload or {}), "application/json", headers=headers)


def executions(label: str) -> int:
    return Execution.objects.filter(label=label).count()


# A view interrupted by what Django's handler lets through


def test_interrupted_view__rolls_back_and_frees_the_key(client: Client) -> None:
    with pytest.raises(ClientWentAway):
        post(client, "/interrupted/")

    assert executions("interrupted") == 0  # rolled back with the shared transaction
    assert not IdempotencyKey.objects.exists()  # and the key is free for a retry


def test_interrupted_view__without_atomic_mode_stores_an_unknown_outcome(
    client: Client, settings: Any
) -> None:
    settings.IDEMPOTENCY_ATOMIC = False
    with pytest.raises(ClientWentAway):
        post(client, "/interrupted/")

    retry = post(client, "/interrupted/")

    assert executions("interrupted") == 1
    assert retry.status_code == 500
    assert retry["Idempotent-Replayed"] == "true"
    assert is_problem(retry, "idempotency_outcome_unknown")


def test_interrupted_request_the_layer_does_not_cover__propagates_untouched(
    client: Client,
) -> None:
    with pytest.raises(ClientWentAway):
        client.get("/interrupted/", headers={"Idempotency-Key": "k"})  # a safe method

    assert executions("interrupted") == 1  # no transaction of ours to roll back
    assert not IdempotencyKey.objects.exists()


@pytest.mark.asyncio
async def test_cancelled_async_view__rolls_back_and_frees_the_key(async_client: Any) -> None:
    await async_client.aforce_login(await sync_to_async(UserFactory.create)())
    try:
        with pytest.raises(asyncio.CancelledError):
            await async_client.post(
                "/cancelled/", {}, content_type="application/json", headers={"Idempotency-Key": "k"}
            )

        assert await sync_to_async(executions)("cancelled") == 0
        assert not await sync_to_async(IdempotencyKey.objects.exists)()
    finally:
        # Close the connection asgiref's worker thread opened, or the test database
        # cannot be dropped.
        await sync_to_async(connections.close_all)()


# Bodies over Django's upload limit


@pytest.mark.parametrize("url", ["/own-storage/", "/drf/doomed/"], ids=["decorator", "mixin"])
def test_body_over_the_upload_limit__is_413_and_runs_nothing(
    client: Client, settings: Any, url: str
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    response = post(client, url, payload={"padding": "x" * 1000})

    assert response.status_code == 413
    assert is_problem(response, "idempotency_request_too_large")
    assert not Execution.objects.exists()
    assert not IdempotencyKey.objects.exists()


# A view that dooms its own transaction


@pytest.mark.parametrize("url", ["/doomed/", "/drf/doomed/"], ids=["decorator", "mixin"])
def test_success_in_a_doomed_transaction__goes_out_but_frees_the_key(
    client: Client, url: str
) -> None:
    first = post(client, url)

    assert first.status_code == 201
    assert executions("doomed") == 0  # its write did not stay
    assert not IdempotencyKey.objects.exists()  # so no retry is answered from it
    retry = post(client, url)
    assert retry.status_code == 201
    assert "Idempotent-Replayed" not in retry


# Per-view options


def test_replay_headers_option__adds_to_the_settings_list(client: Client) -> None:
    first = post(client, "/more-headers/")
    retry = post(client, "/more-headers/")

    assert retry["Idempotent-Replayed"] == "true"
    assert retry["X-Not-Allow-Listed"] == first["X-Not-Allow-Listed"]
    assert retry["ETag"] == first["ETag"]  # the settings' own list still applies
    assert executions("more-headers") == 1


@pytest.mark.parametrize(
    "url", ["/own-storage/", "/own-storage-instance/"], ids=["path", "instance"]
)
def test_storage_option__overrides_the_storage_setting(
    client: Client, settings: Any, url: str
) -> None:
    # The setting names a storage this test's caches cannot serve (no django-redis cache
    # under "default"): the view's own option is the one used.
    settings.IDEMPOTENCY_STORAGE = "django_idempotency.storage.CacheStorage"
    settings.IDEMPOTENCY_CACHE_ALIAS = "default"

    first = post(client, url)
    retry = post(client, url)

    assert first.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert IdempotencyKey.objects.filter(key="k").count() == 1


def test_storage_setting__naming_a_class_that_is_no_storage_refuses_covered_requests(
    settings: Any,
) -> None:
    settings.IDEMPOTENCY_STORAGE = "django.http.HttpResponse"

    with pytest.raises(ImproperlyConfigured, match="is not a django_idempotency Storage subclass"):
        post(Client(raise_request_exception=True), "/more-headers/")
    assert not Execution.objects.exists()


# The key


def test_key__control_character_inside_quotes_is_400(client: Client) -> None:
    response = post(client, "/own-storage/", key='"ab\x01c"')

    assert response.status_code == 400
    assert is_problem(response, "idempotency_key_invalid")
    assert not Execution.objects.exists()


# Who the caller is


def test_principal_without_a_primary_key__is_refused_rather_than_shared() -> None:
    # Two such principals could not be told apart: with no Authorization header to scope by,
    # the keyed request is refused, as an anonymous one is.
    response = post(Client(), "/drf/service/")

    assert response.status_code == 403
    assert is_problem(response, "idempotency_key_without_principal")
    assert executions("service") == 0


# Transactions of requests the layer does not cover


def test_unkeyed_mixin_request_under_atomic_requests__commits_its_writes(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)

    response = post(client, "/drf/optional/", key=None)

    assert response.status_code == 201
    assert executions("optional") == 1
    assert not IdempotencyKey.objects.exists()
