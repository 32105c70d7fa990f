"""A view's policy: built once for its options, rebuilt when a setting changes, and a view's
``get_idempotency_scope()`` and ``get_idempotency_fingerprint()`` hooks decide per request.
A view's own ``replay_headers`` and ``storage`` options apply to its requests alone.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency.decorators import idempotent
from django_idempotency.mixins import IdempotencyMixin
from django_idempotency.models import IdempotencyKey
from django_idempotency.policy import Policy
from django_idempotency.storage import DatabaseStorage
from tests.factories import UserFactory
from tests.problems import is_problem
from tests.testapp.models import Execution
from tests.testapp.views import behave

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


class CountingView(IdempotencyMixin, APIView):
    def post(self, request: Request) -> HttpResponse:
        Execution.objects.create(label="counted")
        body = {"executions": Execution.objects.count()}
        return HttpResponse(json.dumps(body), status=201, content_type="application/json")


class PerTenantView(CountingView):
    """Keys are kept per user and tenant, as a multi-tenant API's gateway names it."""

    def get_idempotency_scope(self, request: HttpRequest) -> str:
        return f"{super().get_idempotency_scope(request)}:tenant:{request.headers['X-Tenant']}"


class BodyBlindView(CountingView):
    """What the request asks for is its path alone (a client adds a timestamp to bodies)."""

    def get_idempotency_fingerprint(self, request: HttpRequest) -> str:
        return request.path


class VersionedFingerprintView(CountingView):
    """The default fingerprint, marked with the API's version."""

    def get_idempotency_fingerprint(self, request: HttpRequest) -> str:
        return f"v2:{super().get_idempotency_fingerprint(request)}"


@csrf_exempt
@idempotent(required=True, replay_headers=["X-Not-Allow-Listed"])
def more_headers(request: HttpRequest) -> HttpResponse:
    return behave({}, "more-headers")


@csrf_exempt
@idempotent(required=True, storage="django_idempotency.storage.DatabaseStorage")
def own_storage(request: HttpRequest) -> HttpResponse:
    return behave({}, "own-storage")


@csrf_exempt
@idempotent(required=True, storage=DatabaseStorage())
def own_storage_instance(request: HttpRequest) -> HttpResponse:
    return behave({}, "own-storage-instance")


urlpatterns = [
    path("per-tenant/", PerTenantView.as_view()),
    path("body-blind/", BodyBlindView.as_view()),
    path("versioned/", VersionedFingerprintView.as_view()),
    path("more-headers/", more_headers),
    path("own-storage/", own_storage),
    path("own-storage-instance/", own_storage_instance),
]


@pytest.fixture
def client() -> Client:
    client = Client()
    client.force_login(UserFactory.create())
    return client


def test_policy__the_same_options_give_the_same_policy() -> None:
    options = {"ttl": 30, "methods": ["POST"], "replay_headers": ["X-Cost"]}

    assert Policy.build(options) is Policy.build(dict(options))
    assert Policy.build(options).ttl == timedelta(seconds=30)


def test_policy__a_kept_policy_follows_a_changed_setting(settings: Any) -> None:
    options = {"ttl": 30}
    assert Policy.build(options).lease == timedelta(seconds=60)

    settings.IDEMPOTENCY_LEASE = 5

    assert Policy.build(options).lease == timedelta(seconds=5)


def test_policy__an_unhashable_value_is_refused_not_crashed_on() -> None:
    with pytest.raises(ImproperlyConfigured, match="methods="):
        Policy.build({"methods": [["POST"]]})


def test_policy__a_value_equal_to_a_valid_one_is_still_refused() -> None:
    Policy.build({"required": True})

    with pytest.raises(ImproperlyConfigured, match="required=1 is not a bool"):
        Policy.build({"required": 1})


def test_scope_hook__decides_per_request(client: Client) -> None:
    key = str(uuid.uuid4())

    def post(tenant: str) -> Any:
        return client.post(
            "/per-tenant/",
            {},
            content_type="application/json",
            headers={"Idempotency-Key": key, "X-Tenant": tenant},
        )

    first, other_tenant, retry = post("acme"), post("globex"), post("acme")

    assert (first.status_code, other_tenant.status_code) == (201, 201)
    assert other_tenant.get("Idempotent-Replayed") is None
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert Execution.objects.count() == 2


def test_fingerprint_hook__decides_per_request(client: Client) -> None:
    key = str(uuid.uuid4())

    def post(body: dict[str, Any]) -> Any:
        return client.post(
            "/body-blind/", body, content_type="application/json", headers={"Idempotency-Key": key}
        )

    first, retry = post({"sent_at": 1}), post({"sent_at": 2})

    assert retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert Execution.objects.count() == 1


def test_fingerprint_hook__may_build_on_the_default(client: Client) -> None:
    key = str(uuid.uuid4())

    def post(body: dict[str, Any]) -> Any:
        return client.post(
            "/versioned/", body, content_type="application/json", headers={"Idempotency-Key": key}
        )

    first, same, other = post({"qty": 1}), post({"qty": 1}), post({"qty": 2})

    assert same["Idempotent-Replayed"] == "true"
    assert same.content == first.content
    assert is_problem(other, "idempotency_key_mismatch")


def keyed_post(client: Client, url: str) -> Any:
    return client.post(url, {}, content_type="application/json", headers={"Idempotency-Key": "k"})


@pytest.mark.django_db(transaction=True)
def test_replay_headers_option__adds_to_the_settings_list(client: Client) -> None:
    first = keyed_post(client, "/more-headers/")
    retry = keyed_post(client, "/more-headers/")

    assert retry["Idempotent-Replayed"] == "true"
    assert retry["X-Not-Allow-Listed"] == first["X-Not-Allow-Listed"]
    assert retry["ETag"] == first["ETag"]  # the settings' own list still applies
    assert Execution.objects.filter(label="more-headers").count() == 1


@pytest.mark.django_db(transaction=True)
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

    first = keyed_post(client, url)
    retry = keyed_post(client, url)

    assert first.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert IdempotencyKey.objects.filter(key="k").count() == 1


def test_disabled__a_value_that_is_not_a_bool_protects_as_if_unset(settings: Any) -> None:
    from django_idempotency.policy import is_disabled

    settings.IDEMPOTENCY_DISABLED = "yes"  # mistyped: refused by check E001, and protects

    assert is_disabled() is False


def test_a_storage_of_a_projects_own__may_leave_erasure_and_counting_out() -> None:
    from django_idempotency.storage.base import Storage

    class Minimal(Storage):
        claim = complete = release = get = None  # type: ignore[assignment]

    with pytest.raises(NotImplementedError, match="cannot erase"):
        list(Minimal().erase_scope("user:1"))
    with pytest.raises(NotImplementedError, match="cannot count"):
        Minimal().count_scope("user:1")
