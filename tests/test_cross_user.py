"""Two users, one key: two unrelated records (DESIGN §2.2, no cross-scope visibility).

Users are told apart by a session login through the middleware and by DRF token
authentication through the mixin, with each storage. Neither user ever receives, is
blocked by, or is refused because of the other's record.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from rest_framework.authtoken.models import Token

from django_idempotency.exceptions import (
    IdempotencyKeyInProgress,
    IdempotencyKeyMismatch,
    IdempotencyKeyWithoutPrincipal,
)
from tests.factories import UserFactory
from tests.testapp import views
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

JOIN_SECONDS = 30.0


@dataclass(frozen=True)
class Answer:
    status: int
    replayed: bool
    body: bytes

    def error(self) -> str:
        """The problem's code, or DRF's detail text."""
        document = json.loads(self.body)
        return str(document.get("code") or document["detail"])


@dataclass
class Principal:
    """One authenticated user, sending requests its own way (session or DRF token)."""

    path: str
    login: Callable[[Client], dict[str, str]]
    client: Client = field(default_factory=Client)
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.headers = self.login(self.client)

    def copy(self) -> Principal:
        """The same user on a new client: a Client is not meant to be shared by threads."""
        copy = Principal(self.path, lambda _: self.headers)
        copy.client.cookies.load({name: m.value for name, m in self.client.cookies.items()})
        return copy

    def post(self, key: str, payload: dict[str, Any]) -> Answer:
        response = self.client.post(
            self.path,
            data=json.dumps(payload),
            content_type="application/json",
            headers={"Idempotency-Key": key, **self.headers},
        )
        return Answer(
            response.status_code,
            response.get("Idempotent-Replayed") == "true",
            response.content,
        )


def _session(client: Client) -> dict[str, str]:
    client.force_login(UserFactory.create())
    return {}


def _drf_token(client: Client) -> dict[str, str]:
    return {"Authorization": f"Token {Token.objects.create(user=UserFactory.create()).key}"}


@pytest.fixture(
    params=[
        pytest.param(("/decorated/behave/", _session), id="middleware_session"),
        pytest.param(("/drf/behave/", _drf_token), id="drf_mixin_token"),
    ]
)
def users(request: pytest.FixtureRequest, storage_backend: str) -> tuple[Principal, Principal]:
    path, login = request.param
    return Principal(path, login), Principal(path, login)


def is_in_progress(answer: Answer) -> bool:
    return answer.status == 409 and answer.error() in (
        IdempotencyKeyInProgress.default_code,
        IdempotencyKeyInProgress.default_detail,
    )


def is_mismatch(answer: Answer) -> bool:
    return answer.status == 422 and answer.error() in (
        IdempotencyKeyMismatch.default_code,
        IdempotencyKeyMismatch.default_detail,
    )


def test_scope__same_key_and_body_from_two_users_run_twice_and_replay_their_own(
    users: tuple[Principal, Principal],
) -> None:
    alice, bob = users
    key, payload = f"key-{uuid.uuid4()}", {"label": f"pay-{uuid.uuid4()}"}

    for_alice = alice.post(key, payload)
    for_bob = bob.post(key, payload)

    assert (for_alice.status, for_alice.replayed) == (201, False)
    assert (for_bob.status, for_bob.replayed) == (201, False)
    assert json.loads(for_alice.body)["executions"] == 1
    assert json.loads(for_bob.body)["executions"] == 2
    assert Execution.objects.filter(label=payload["label"]).count() == 2
    # Each retry replays its own user's response, never the other's.
    assert alice.post(key, payload) == Answer(201, True, for_alice.body)
    assert bob.post(key, payload) == Answer(201, True, for_bob.body)
    assert Execution.objects.filter(label=payload["label"]).count() == 2


def test_scope__another_users_record_never_causes_a_mismatch(
    users: tuple[Principal, Principal],
) -> None:
    alice, bob = users
    key = f"key-{uuid.uuid4()}"
    to_shop, to_bank = {"label": f"shop-{uuid.uuid4()}"}, {"label": f"bank-{uuid.uuid4()}"}

    alice.post(key, to_shop)
    for_bob = bob.post(key, to_bank)

    assert (for_bob.status, for_bob.replayed) == (201, False)
    assert json.loads(for_bob.body)["echo"] == to_bank
    # Each user's key is bound to that user's own request only.
    assert is_mismatch(alice.post(key, to_bank))
    assert is_mismatch(bob.post(key, to_shop))
    assert Execution.objects.filter(label=to_shop["label"]).count() == 1
    assert Execution.objects.filter(label=to_bank["label"]).count() == 1


@pytest.mark.postgres
def test_scope__another_users_in_flight_key_never_causes_a_409(
    users: tuple[Principal, Principal], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = users
    # Both views wait for this event, so they certainly still run while the test sends more.
    hold_name = f"hold-{uuid.uuid4()}"
    hold = views.HOLDS[hold_name] = threading.Event()
    key, payload = f"key-{uuid.uuid4()}", {"label": f"pay-{uuid.uuid4()}", "hold": hold_name}
    answers: dict[str, Answer] = {}
    runs = threading.Semaphore(0)
    behave = views.behave

    def counted_behave(payload: dict[str, Any], label: str) -> Any:
        runs.release()
        return behave(payload, label)

    monkeypatch.setattr(views, "behave", counted_behave)

    def start(name: str, principal: Principal) -> threading.Thread:
        def run() -> None:
            try:
                answers[name] = principal.post(key, payload)
            finally:
                connection.close()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # Wait until its view runs, so it holds its key from now on.
        assert runs.acquire(timeout=10), f"{name}'s view never ran"
        return thread

    threads = [start("alice", alice.copy())]
    threads.append(start("bob", bob.copy()))
    # Both users' requests are running now, with the same key and body.
    assert is_in_progress(alice.copy().post(key, payload))
    assert is_in_progress(bob.copy().post(key, payload))
    hold.set()
    for thread in threads:
        thread.join(timeout=JOIN_SECONDS)

    assert [(answers[n].status, answers[n].replayed) for n in ("alice", "bob")] == [
        (201, False),
        (201, False),
    ]
    assert Execution.objects.filter(label=payload["label"]).count() == 2


def test_scope__an_anonymous_client_never_receives_a_users_response(storage_backend: str) -> None:
    alice = Principal("/decorated/behave/", _session)
    anonymous = Principal("/decorated/behave/", lambda _: {})
    guest = Principal("/decorated/behave/", _anonymous_session)
    key, payload = f"key-{uuid.uuid4()}", {"label": f"pay-{uuid.uuid4()}"}

    for_alice = alice.post(key, payload)
    for_anonymous = anonymous.post(key, payload)
    for_guest = guest.post(key, payload)

    assert (for_anonymous.status, for_anonymous.error()) == (
        403,
        IdempotencyKeyWithoutPrincipal.default_code,
    )
    assert (for_guest.status, for_guest.replayed) == (201, False)
    assert for_guest.body != for_alice.body
    assert Execution.objects.filter(label=payload["label"]).count() == 2


def _anonymous_session(client: Client) -> dict[str, str]:
    client.session  # noqa: B018  (an anonymous browser with a session)
    return {}
