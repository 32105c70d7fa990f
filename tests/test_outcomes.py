"""Every outcome sends its signal and logs its line, the same through every entry point and storage.

The matrix of test_behaviour (storage x entry point x sync/async), asked what a receiver of
``django_idempotency.signals`` and the ``django_idempotency.outcomes`` logger hear.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.dispatch import Signal

from django_idempotency import signals
from django_idempotency.outcomes import TELLINGS, Outcome, key_hash
from django_idempotency.policy import Policy
from django_idempotency.storage.registry import configured_storage
from tests.leases import expire_now, uses_tombstones
from tests.test_behaviour import (  # the matrix's fixtures, shared
    WITH_TOMBSTONES,
    Caller,
    broken_store,  # noqa: F401
    claim_in_flight,
    client,  # noqa: F401
    entry_point,  # noqa: F401
    executions,
    send,
    storage,  # noqa: F401
    through,
    url,  # noqa: F401
)
from tests.testapp import views

pytestmark = pytest.mark.django_db(transaction=True)

#: Each signal of the module, by the outcome it tells.
SIGNALS: dict[Outcome, Signal] = {outcome: telling.signal for outcome, telling in TELLINGS.items()}


class Heard:
    """What every outcome signal sent while it listened: (outcome, arguments) in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[Outcome, dict[str, Any]]] = []

    def __call__(self, sender: Any, **kwargs: Any) -> None:
        assert sender is Policy
        self.sent.append((kwargs["outcome"], kwargs))

    @property
    def outcomes(self) -> list[Outcome]:
        return [outcome for outcome, _arguments in self.sent]

    def arguments(self, outcome: Outcome) -> dict[str, Any]:
        return next(arguments for sent, arguments in self.sent if sent is outcome)


@pytest.fixture
def heard() -> Iterator[Heard]:
    listener = Heard()
    for signal in SIGNALS.values():
        signal.connect(listener)
    yield listener
    for signal in SIGNALS.values():
        signal.disconnect(listener)


def test_every_outcome__has_its_own_signal_in_the_signals_module() -> None:
    assert len(set(SIGNALS.values())) == len(Outcome)
    assert set(SIGNALS.values()) == {s for s in vars(signals).values() if isinstance(s, Signal)}
    # The two signals older releases sent keep their names.
    assert SIGNALS[Outcome.REPLAYED] is signals.idempotency_replayed
    assert SIGNALS[Outcome.FAILED_OPEN] is signals.idempotency_failed_open


def test_first_request__is_claimed_then_completed(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    heard: Heard,
) -> None:
    send(client, url, {"label": "pay"}, key="k")

    assert heard.outcomes == [Outcome.CLAIMED, Outcome.COMPLETED]
    claimed, completed = (arguments for _outcome, arguments in heard.sent)
    assert claimed["key"] == "k"
    assert claimed["method"] == "POST"
    assert claimed["view"].startswith("tests.testapp.views.")  # a view name, never the path
    assert claimed["scope"].startswith("user:")
    assert claimed["operation"] == "claim"
    assert claimed["store_seconds"] > 0
    assert completed["operation"] == "complete"
    assert completed["status"] == 201
    assert completed["error"] is None


def test_retry__is_replayed(client: Caller, url: str, heard: Heard) -> None:  # noqa: F811
    send(client, url, {"label": "pay"}, key="k")
    heard.sent.clear()

    send(client, url, {"label": "pay"}, key="k")

    assert heard.outcomes == [Outcome.REPLAYED]
    assert heard.arguments(Outcome.REPLAYED)["status"] == 201


def test_reused_key__is_a_mismatch(client: Caller, url: str, heard: Heard) -> None:  # noqa: F811
    send(client, url, {"label": "pay"}, key="k")
    heard.sent.clear()

    send(client, url, {"label": "other"}, key="k")

    assert heard.outcomes == [Outcome.MISMATCH]
    assert heard.arguments(Outcome.MISMATCH)["status"] == 422


def test_key_in_flight__is_in_progress(client: Caller, url: str, heard: Heard) -> None:  # noqa: F811
    claim_in_flight(client, url, {"label": "pay"}, "k", timedelta(minutes=5))

    send(client, url, {"label": "pay"}, key="k")

    assert heard.outcomes == [Outcome.IN_PROGRESS]
    assert heard.arguments(Outcome.IN_PROGRESS)["status"] == 409


def test_view_that_refuses__releases_its_key(client: Caller, url: str, heard: Heard) -> None:  # noqa: F811
    # A 403 is never stored (DESIGN §4), whatever the storage: a retry runs the view.
    send(client, url, {"label": "pay", "status": 403}, key="k")

    assert heard.outcomes == [Outcome.CLAIMED, Outcome.RELEASED]
    assert heard.arguments(Outcome.RELEASED)["operation"] == "release"


def test_response_too_large__is_not_replayable(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    heard: Heard,
    settings: Any,
) -> None:
    settings.IDEMPOTENCY_MAX_RESPONSE_SIZE = 10
    send(client, url, {"label": "pay", "size": 100}, key="k")
    heard.sent.clear()

    send(client, url, {"label": "pay", "size": 100}, key="k")

    assert heard.outcomes == [Outcome.NOT_REPLAYABLE]


@pytest.mark.usefixtures("broken_store")
def test_store_down__is_store_unavailable(client: Caller, url: str, heard: Heard) -> None:  # noqa: F811
    send(client, url, {"label": "pay"}, key="k")

    assert heard.outcomes == [Outcome.STORE_UNAVAILABLE]
    arguments = heard.arguments(Outcome.STORE_UNAVAILABLE)
    assert arguments["status"] == 503
    assert arguments["operation"] == "claim"
    # The store's own exception, not the 503 it was answered with.
    assert arguments["error"] is not None
    assert "Idempotency" not in type(arguments["error"]).__name__


@pytest.mark.usefixtures("broken_store")
def test_store_down__fail_open_is_failed_open(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    heard: Heard,
    settings: Any,
) -> None:
    settings.IDEMPOTENCY_FAIL_OPEN = True

    send(client, url, {"label": "pay"}, key="k")

    assert heard.outcomes == [Outcome.FAILED_OPEN]
    assert executions("pay") == 1


def test_owner_slower_than_its_lease__is_lease_expired(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    heard: Heard,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    behave = views.behave

    def overtaken(payload: dict[str, Any], label: str) -> Any:
        # After the view's work its lease ends, and a retry takes the key over.
        response = behave(payload, label)
        expire_now("k")
        claim_in_flight(client, url, payload, "k", timedelta(minutes=5))
        return response

    monkeypatch.setattr(views, "behave", overtaken)

    send(client, url, {"label": "pay"}, key="k")

    assert heard.outcomes == [Outcome.CLAIMED, Outcome.LEASE_EXPIRED]
    assert heard.arguments(Outcome.LEASE_EXPIRED)["operation"] == "complete"


@WITH_TOMBSTONES
def test_retry_after_the_key_expired__is_expired(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    heard: Heard,
) -> None:
    # Clients that retry later than IDEMPOTENCY_TTL run the view again; operators see it.
    send(client, url, {"label": "pay"}, key="k")
    expire_now("k")
    heard.sent.clear()

    send(client, url, {"label": "pay"}, key="k")

    assert executions("pay") == 2
    if uses_tombstones():
        assert heard.outcomes == [Outcome.EXPIRED, Outcome.COMPLETED]
        assert heard.arguments(Outcome.EXPIRED)["expired_for"] >= timedelta(0)
    else:
        # Redis deleted the record at its TTL: nothing is left to tell an expired key from
        # a new one (docs/observability.md, "Retries after expiry").
        assert heard.outcomes == [Outcome.CLAIMED, Outcome.COMPLETED]


@WITH_TOMBSTONES
def test_claim_of_a_key_whose_request_crashed__is_taken_over(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    heard: Heard,
) -> None:
    claim_in_flight(client, url, {"label": "pay"}, "k", timedelta(minutes=5))
    expire_now("k")

    send(client, url, {"label": "pay"}, key="k")

    if uses_tombstones():
        assert heard.outcomes == [Outcome.TAKEN_OVER, Outcome.COMPLETED]
        arguments = heard.arguments(Outcome.TAKEN_OVER)
        assert arguments["operation"] == "claim"
        assert arguments["expired_for"] >= timedelta(0)
    else:
        assert heard.outcomes == [Outcome.CLAIMED, Outcome.COMPLETED]
    assert executions("pay") == 1


@WITH_TOMBSTONES
def test_retry_after_a_release__is_a_new_claim_not_a_takeover(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    heard: Heard,
) -> None:
    # A released key was freed on purpose (the view failed): its retry is a first request.
    send(client, url, {"label": "pay", "status": 403}, key="k")
    heard.sent.clear()

    send(client, url, {"label": "pay"}, key="k")

    assert heard.outcomes == [Outcome.CLAIMED, Outcome.COMPLETED]


def test_a_new_key__says_nothing_expired(client: Caller, url: str, heard: Heard) -> None:  # noqa: F811
    send(client, url, {"label": "pay"}, key="k")

    assert heard.arguments(Outcome.CLAIMED)["expired_for"] is None


# The log lines


@through("mixin")  # behind the middleware a raising view is a 500 response, stored as one
def test_log_lines__of_a_lost_lease_never_carry_the_key_even_in_their_traceback(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    settings: Any,
) -> None:
    # A view that raised outside a shared transaction: its unknown outcome is stored, but
    # its lease ended first. The storages' OwnershipLost once named the key, and this line
    # carries it as exc_info (and a span records it): the key was in clear.
    settings.IDEMPOTENCY_ATOMIC = False
    key = "cust-4711-secret-idem-key"
    store = configured_storage()
    complete = store.complete

    def after_the_lease(claim: Any, *args: Any, **kwargs: Any) -> None:
        expire_now(key)
        complete(claim, *args, **kwargs)

    monkeypatch.setattr(store, "complete", after_the_lease)
    with caplog.at_level(logging.DEBUG, logger="django_idempotency"):
        send(client, url, {"label": "pay", "raise": True}, key=key)

    assert "OwnershipLost" in caplog.text
    assert key not in caplog.text


def test_log_lines__name_method_view_key_hash_and_scope_kind_never_the_key(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "customer-42-payment-secret"
    with caplog.at_level(logging.DEBUG, logger="django_idempotency.outcomes"):
        send(client, url, {"label": "pay"}, key=key)
        send(client, url, {"label": "pay"}, key=key)
        send(client, url, {"label": "other"}, key=key)

    lines = [r for r in caplog.records if r.name == "django_idempotency.outcomes"]
    assert [r.idempotency["outcome"] for r in lines] == [  # type: ignore[attr-defined]
        "claimed",
        "completed",
        "replayed",
        "mismatch",
    ]
    assert [r.levelno for r in lines] == [logging.DEBUG] * 3 + [logging.INFO]
    for record in lines:
        message = record.getMessage()
        assert key not in message
        assert f"sha256:{key_hash(key)}" in message
        assert "POST tests.testapp.views." in message
        assert "user scope" in message
        assert record.idempotency["scope_kind"] == "user"  # type: ignore[attr-defined]
    expire_now(key)
