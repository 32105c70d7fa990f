"""The security model (docs/behaviour.md): no caller receives, blocks or poisons another's record.

Each test plays an attacker who knows or guesses another caller's key, through every entry
point and on both storages: the attacker gets exactly what a fresh key would give them. A
principal that cannot be told apart from another (no primary key) is refused, not shared.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import path
from rest_framework import authentication
from rest_framework.authtoken.models import Token
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency.exceptions import IdempotencyKeyWithoutPrincipal
from django_idempotency.mixins import IdempotencyMixin
from django_idempotency.testing import close_thread_connections
from tests.factories import UserFactory
from tests.problems import is_problem
from tests.records import stored_records
from tests.testapp.models import Execution
from tests.testapp.views import behave

pytestmark = pytest.mark.django_db(transaction=True)

#: Entry points that anonymous callers can reach (the DRF view allows anyone).
ENTRY_POINTS = {
    "mixin": "/drf/behave/",
    "middleware": "/plain/behave/",
    "decorator": "/decorated/behave/",
}
WITHOUT_PRINCIPAL = IdempotencyKeyWithoutPrincipal.default_code


@pytest.fixture(params=list(ENTRY_POINTS))
def url(request: pytest.FixtureRequest, storage_backend: str) -> str:
    return ENTRY_POINTS[request.param]


def post(client: Client, url: str, key: str, payload: dict[str, Any], **headers: str) -> Any:
    return client.post(
        url,
        json.dumps(payload),
        content_type="application/json",
        headers={"Idempotency-Key": key, **headers},
    )


def error_code(response: Any) -> str | None:
    """The problem's code, from a problem document or the mixin's DRF error body."""
    body = response.json()
    if "code" in body:
        return str(body["code"])
    detail = body.get("detail")
    for kind in (IdempotencyKeyWithoutPrincipal,):
        if detail == kind.default_detail:
            return kind.default_code
    return None


def executions(label: str) -> int:
    return Execution.objects.filter(label__startswith=label).count()


def with_session() -> Client:
    """An anonymous browser that holds a Django session, as after visiting a shop's pages."""
    client = Client()
    client.session  # noqa: B018  (creates and saves the session, and sets its cookie)
    return client


# Anonymous callers (issue 7, item 2)


def test_anonymous__without_a_session_is_refused_and_nothing_runs(url: str) -> None:
    label = f"guest-{uuid.uuid4()}"

    response = post(Client(), url, "k", {"label": label})

    assert response.status_code == 403
    assert error_code(response) == WITHOUT_PRINCIPAL
    assert executions(label) == 0
    assert stored_records() == []


def test_anonymous__with_a_session_is_protected_in_its_own_scope(url: str) -> None:
    label = f"guest-{uuid.uuid4()}"
    alice, mallory = with_session(), with_session()

    for_alice = post(alice, url, "k", {"label": label})
    for_mallory = post(mallory, url, "k", {"label": label})
    alice_retry = post(alice, url, "k", {"label": label})
    mallory_other = post(mallory, url, "k", {"label": "something else"})

    assert (for_alice.status_code, for_mallory.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in for_mallory  # a fresh run, not Alice's body
    assert alice_retry["Idempotent-Replayed"] == "true"
    assert alice_retry.content == for_alice.content
    assert mallory_other.status_code == 422  # against Mallory's own record only
    assert executions(label) == 2
    # The session key itself is never stored: the admin shows scopes.
    for scope, _key, _state in stored_records():
        assert scope.startswith("session:")
        assert alice.session.session_key
        assert alice.session.session_key not in scope


def test_anonymous__a_made_up_session_cookie_is_no_session(url: str) -> None:
    client = Client()
    client.cookies["sessionid"] = "x" * 32

    response = post(client, url, "k", {"label": "guest"})

    assert response.status_code == 403
    assert error_code(response) == WITHOUT_PRINCIPAL


def test_anonymous__refuse_mode_refuses_even_with_a_session(url: str) -> None:
    with override_settings(IDEMPOTENCY_ANONYMOUS="refuse"):
        response = post(with_session(), url, "k", {"label": "guest"})

    assert response.status_code == 403
    assert error_code(response) == WITHOUT_PRINCIPAL


def test_anonymous__shared_scope_is_an_explicit_opt_in(url: str) -> None:
    label = f"guest-{uuid.uuid4()}"
    with override_settings(IDEMPOTENCY_ANONYMOUS="shared"):
        first = post(Client(), url, "k", {"label": label})
        second = post(Client(), url, "k", {"label": label})

    assert first.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert [scope for scope, _key, _state in stored_records()] == ["anonymous"]


@pytest.mark.parametrize("url", ["/decorated/shared-anonymous/", "/drf/shared-anonymous/"])
def test_anonymous__shared_scope_per_view(url: str) -> None:
    first = post(Client(), url, "k", {"label": "signup"})
    second = post(Client(), url, "k", {"label": "signup"})

    assert first.status_code == 201
    assert second["Idempotent-Replayed"] == "true"


def test_anonymous__without_a_key_runs_as_usual(url: str) -> None:
    response = Client().post(url, "{}", content_type="application/json")

    assert response.status_code in (201, 400)  # 400 where the key is required
    assert stored_records() == []


# DRF views whose authentication the middleware cannot see (issue 7, item 1)


@pytest.fixture
def api_keys() -> dict[str, str]:
    return {name: Token.objects.create(user=UserFactory.create(username=name)).key for name in "ab"}


def _set_cookie(client: Client, name: str, value: str) -> dict[str, str]:
    """Send the credential as a cookie; no header needed."""
    client.cookies.load({name: value})
    return {}


CREDENTIALS: dict[str, Callable[[Client, str], dict[str, str]]] = {
    "header": lambda client, key: {"X-Api-Key": key},
    "cookie": lambda client, key: _set_cookie(client, "api_token", key),
}


@pytest.mark.parametrize("how", list(CREDENTIALS))
def test_drf_view_without_mixin__the_middleware_never_answers_for_it(
    how: str, api_keys: dict[str, str], storage_backend: str
) -> None:
    url, label = "/drf-without-mixin/api-key/", f"charge-{uuid.uuid4()}"
    alice, bob, nobody = Client(), Client(), Client()

    for_alice = post(alice, url, "k", {"label": label}, **CREDENTIALS[how](alice, api_keys["a"]))
    for_bob = post(bob, url, "k", {"label": label}, **CREDENTIALS[how](bob, api_keys["b"]))
    for_nobody = post(nobody, url, "k", {"label": label})

    assert (for_alice.status_code, for_bob.status_code) == (201, 201)
    assert json.loads(for_bob.content)["label"].endswith("@b")  # Bob's own run
    assert for_nobody.status_code == 403  # refused by the view's own permission check
    assert "Idempotent-Replayed" not in for_nobody
    assert stored_records() == []


@pytest.mark.parametrize("how", list(CREDENTIALS))
def test_drf_view_with_mixin__scopes_by_the_user_drf_authenticated(
    how: str, api_keys: dict[str, str], storage_backend: str
) -> None:
    url, label = "/drf/api-key/", f"charge-{uuid.uuid4()}"
    alice, bob, nobody = Client(), Client(), Client()
    as_alice = CREDENTIALS[how](alice, api_keys["a"])
    as_bob = CREDENTIALS[how](bob, api_keys["b"])

    # The attacker goes first, to poison the key; then both users pay.
    for_nobody = post(nobody, url, "k", {"label": label})
    for_alice = post(alice, url, "k", {"label": label}, **as_alice)
    for_bob = post(bob, url, "k", {"label": label}, **as_bob)
    alice_retry = post(alice, url, "k", {"label": label}, **as_alice)
    nobody_again = post(nobody, url, "k", {"label": label})

    assert for_nobody.status_code == nobody_again.status_code == 403
    assert "Idempotent-Replayed" not in nobody_again
    assert (for_alice.status_code, for_bob.status_code) == (201, 201)
    assert "Idempotent-Replayed" not in for_bob
    assert json.loads(for_bob.content)["label"].endswith("@b")
    assert alice_retry["Idempotent-Replayed"] == "true"
    assert alice_retry.content == for_alice.content
    assert executions(label) == 2


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


urlpatterns = [path("drf/service/", ServiceView.as_view())]


@pytest.mark.urls(__name__)
def test_drf_principal_without_a_primary_key__is_refused_rather_than_shared() -> None:
    # Two such principals could not be told apart: with no Authorization header to scope by,
    # the keyed request is refused, as an anonymous one is.
    response = post(Client(), "/drf/service/", "k", {})

    assert response.status_code == 403
    assert is_problem(response, WITHOUT_PRINCIPAL)
    assert executions("service") == 0


# Refused requests never store a response (issue 7, item 1: poisoning)


@pytest.mark.parametrize("status", [401, 403])
def test_refused__a_401_or_403_from_the_view_is_not_stored(url: str, status: int) -> None:
    client = Client()
    client.force_login(UserFactory.create())
    label = f"refused-{uuid.uuid4()}"

    refused = post(client, url, "k", {"label": label, "status": status})
    allowed = post(client, url, "k", {"label": label})

    assert refused.status_code == status
    assert (allowed.status_code, "Idempotent-Replayed" in allowed) == (201, False)


@pytest.mark.asyncio
async def test_anonymous__behind_the_async_middleware_is_scoped_by_session_or_refused(
    storage_backend: str,
) -> None:
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    async def send(client: AsyncClient, label: str) -> Any:
        return await client.post(
            "/async/behave/",
            {"label": label},
            content_type="application/json",
            headers={"Idempotency-Key": "k"},
        )

    async def with_async_session() -> AsyncClient:
        client = AsyncClient()
        await client.asession()  # creates and saves the session, and sets its cookie
        return client

    label = f"async-guest-{uuid.uuid4()}"
    try:
        refused = await send(AsyncClient(), label)
        alice, mallory = await with_async_session(), await with_async_session()
        for_alice = await send(alice, label)
        for_mallory = await send(mallory, label)
        alice_retry = await send(alice, label)

        assert refused.status_code == 403
        assert refused.json()["code"] == WITHOUT_PRINCIPAL
        assert (for_alice.status_code, for_mallory.status_code) == (201, 201)
        assert "Idempotent-Replayed" not in for_mallory
        assert alice_retry["Idempotent-Replayed"] == "true"
        assert alice_retry.content == for_alice.content
    finally:
        await sync_to_async(close_thread_connections)()
