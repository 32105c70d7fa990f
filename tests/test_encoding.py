"""Replays of responses with a content coding (issue 7, item 4), through each entry point.

A view that compresses its own body, or GZipMiddleware inside IdempotencyMiddleware, stores
compressed bytes: a replay must carry them with their ``Content-Encoding``, and a retry whose
``Accept-Encoding`` refuses that coding gets a 406 problem instead of bytes it cannot read.
GZipMiddleware outside IdempotencyMiddleware compresses each replay for its own retry.

Every test runs through the DRF mixin, the middleware (a plain view, a decorated view and an
async view), with the test client and the async client (which runs the middleware's async
path), on both storages.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client

from django_idempotency.exceptions import IdempotencyReplayNotAcceptable
from django_idempotency.responses import is_acceptable_encoding, replay_response
from django_idempotency.storage.base import StoredResponse
from tests.factories import UserFactory
from tests.problems import is_problem
from tests.settings import MIDDLEWARE
from tests.testapp.models import Execution

ENTRY_POINTS = {
    "mixin": "/encoding/drf/",
    "middleware": "/encoding/plain/",
    "decorator": "/encoding/decorated/",
    "async-view": "/encoding/async/",
}
#: The entry points behind IdempotencyMiddleware, whose place among the middleware matters.
MIDDLEWARE_ENTRY_POINTS = [name for name in ENTRY_POINTS if name != "mixin"]

GZIP_MIDDLEWARE = "django.middleware.gzip.GZipMiddleware"
NOT_ACCEPTABLE_CODE = "idempotency_replay_not_acceptable"

Send = Callable[..., Any]


@pytest.fixture(params=["sync", "async"])
def send(request: pytest.FixtureRequest, storage_backend: str, transactional_db: None) -> Send:
    """Post as one logged-in user, with the test client or the async client."""
    client: Client | AsyncClient = Client() if request.param == "sync" else AsyncClient()
    client.force_login(UserFactory.create())
    # async_to_sync runs the handler's sync parts in this thread, on this test's connection.
    post = client.post if isinstance(client, Client) else async_to_sync(client.post)

    def send(
        url: str, payload: dict[str, Any], *, key: str = "k", accept_encoding: str | None = None
    ) -> Any:
        headers = {"Idempotency-Key": key}
        if accept_encoding is not None:
            headers["Accept-Encoding"] = accept_encoding
        return post(url, json.dumps(payload), content_type="application/json", headers=headers)

    return send


@pytest.fixture(params=list(ENTRY_POINTS))
def url(request: pytest.FixtureRequest) -> str:
    return ENTRY_POINTS[request.param]


@pytest.fixture(params=MIDDLEWARE_ENTRY_POINTS)
def middleware_url(request: pytest.FixtureRequest) -> str:
    return ENTRY_POINTS[request.param]


def executions() -> int:
    return Execution.objects.count()


def vary(response: Any) -> list[str]:
    """The response's Vary header names, lower-cased (Django 6.1 made its parser private)."""
    return [name.strip().lower() for name in response.get("Vary", "").split(",") if name.strip()]


def decoded(response: Any) -> dict[str, Any]:
    """Return the JSON body, decoded as its Content-Encoding says."""
    body = response.content
    if response.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


# A view that compresses its own body


def test_replay__carries_the_views_content_encoding_with_the_same_bytes(
    send: Send, url: str
) -> None:
    first = send(url, {"gzip": True}, accept_encoding="gzip")
    retry = send(url, {"gzip": True}, accept_encoding="gzip")
    without_header = send(url, {"gzip": True})  # no Accept-Encoding: every coding is acceptable

    assert first.status_code == 201
    assert first["Content-Encoding"] == "gzip"
    for replay in (retry, without_header):
        assert replay["Idempotent-Replayed"] == "true"
        assert replay.status_code == 201
        assert replay.content == first.content
        assert replay["Content-Encoding"] == "gzip"
        assert replay["Content-Type"] == "application/json"
        assert "accept-encoding" in vary(replay)
        assert decoded(replay)["executions"] == 1
    assert executions() == 1


def test_replay__refused_coding_is_a_406_problem_not_unreadable_bytes(send: Send, url: str) -> None:
    first = send(url, {"gzip": True}, accept_encoding="gzip")
    refused = send(url, {"gzip": True}, accept_encoding="identity")
    accepted = send(url, {"gzip": True}, accept_encoding="gzip")

    assert refused.status_code == 406
    assert is_problem(refused, NOT_ACCEPTABLE_CODE)
    assert "Idempotent-Replayed" not in refused
    assert "Content-Encoding" not in refused
    # The record is untouched: a retry that accepts the coding still gets the replay.
    assert accepted["Idempotent-Replayed"] == "true"
    assert accepted.content == first.content
    assert executions() == 1


def test_replay__carries_the_vary_header_of_the_original(send: Send, url: str) -> None:
    send(url, {"vary": "Accept-Language"})
    retry = send(url, {"vary": "Accept-Language"})

    assert retry["Idempotent-Replayed"] == "true"
    assert "accept-language" in vary(retry)
    assert "Content-Encoding" not in retry


# GZipMiddleware


def test_gzip_middleware_outside__compresses_each_replay_for_its_retry(
    send: Send, url: str, settings: Any
) -> None:
    settings.MIDDLEWARE = [GZIP_MIDDLEWARE, *MIDDLEWARE]

    first = send(url, {}, accept_encoding="gzip")
    plain = send(url, {}, accept_encoding="identity")
    compressed = send(url, {}, accept_encoding="gzip, deflate")

    assert first["Content-Encoding"] == "gzip"
    assert plain["Idempotent-Replayed"] == compressed["Idempotent-Replayed"] == "true"
    assert "Content-Encoding" not in plain
    assert plain.content == gzip.decompress(first.content)
    assert compressed["Content-Encoding"] == "gzip"
    assert gzip.decompress(compressed.content) == plain.content
    assert decoded(plain)["executions"] == 1
    assert executions() == 1


def test_gzip_middleware_outside__leaves_a_views_own_coding_alone_on_replay(
    send: Send, url: str, settings: Any
) -> None:
    settings.MIDDLEWARE = [GZIP_MIDDLEWARE, *MIDDLEWARE]

    first = send(url, {"gzip": True}, accept_encoding="gzip")
    retry = send(url, {"gzip": True}, accept_encoding="gzip")

    # Compressed once, by the view: GZipMiddleware does not compress a coded body again.
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert retry["Content-Encoding"] == "gzip"
    assert decoded(retry)["executions"] == 1


def test_gzip_middleware_inside__replay_is_labelled_or_refused(
    send: Send, middleware_url: str, settings: Any
) -> None:
    # After IdempotencyMiddleware, GZipMiddleware compresses before the response is stored.
    settings.MIDDLEWARE = [*MIDDLEWARE, GZIP_MIDDLEWARE]

    first = send(middleware_url, {}, accept_encoding="gzip")
    retry = send(middleware_url, {}, accept_encoding="gzip")
    refused = send(middleware_url, {}, accept_encoding="identity")

    assert first["Content-Encoding"] == "gzip"
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert retry["Content-Encoding"] == "gzip"
    assert "accept-encoding" in vary(retry)
    assert decoded(retry)["executions"] == 1
    assert refused.status_code == 406
    assert is_problem(refused, NOT_ACCEPTABLE_CODE)
    assert executions() == 1


def test_gzip_page__compresses_inside_the_middleware_so_replays_are_labelled_or_refused(
    send: Send,
) -> None:
    first = send("/encoding/gzip-page/", {}, accept_encoding="gzip")
    retry = send("/encoding/gzip-page/", {}, accept_encoding="gzip")
    refused = send("/encoding/gzip-page/", {}, accept_encoding="identity")

    assert first["Content-Encoding"] == "gzip"
    assert retry.content == first.content
    assert retry["Content-Encoding"] == "gzip"
    assert refused.status_code == 406
    assert is_problem(refused, NOT_ACCEPTABLE_CODE)
    assert executions() == 1


def test_gzip_middleware_after_ours__is_still_outside_a_mixin_view(
    send: Send, settings: Any
) -> None:
    # Every middleware runs outside a DRF view, so the mixin stores the uncompressed body.
    settings.MIDDLEWARE = [*MIDDLEWARE, GZIP_MIDDLEWARE]

    first = send(ENTRY_POINTS["mixin"], {}, accept_encoding="gzip")
    plain = send(ENTRY_POINTS["mixin"], {}, accept_encoding="identity")

    assert first["Content-Encoding"] == "gzip"
    assert plain["Idempotent-Replayed"] == "true"
    assert "Content-Encoding" not in plain
    assert plain.content == gzip.decompress(first.content)


# The negotiation (RFC 9110 §12.5.3)


@pytest.mark.parametrize(
    ("content_encoding", "accept_encoding"),
    [
        ("gzip", None),  # no header: every coding is acceptable
        ("gzip", "gzip"),
        ("gzip", "GZip"),
        ("gzip", "deflate, gzip;q=0.5"),
        ("gzip", "gzip ; Q=0.001"),
        ("gzip", "gzip;q=1.000"),
        ("gzip", "*"),
        ("gzip", "br;q=1.0, *;q=0.1"),
        ("gzip", "identity;q=0, *"),
        ("gzip", ",, gzip ,"),
        ("gzip", "x-gzip"),
        ("x-gzip", "gzip"),
        ("gzip, br", "br, gzip"),
        ("gzip", "gzip;level=9"),
        ("", "gzip;q=0, identity;q=0, *;q=0"),  # an uncoded body is never refused
        ("identity", "identity;q=0"),
        ("identity, gzip", "gzip"),
    ],
)
def test_is_acceptable_encoding__accepts(
    content_encoding: str, accept_encoding: str | None
) -> None:
    assert is_acceptable_encoding(content_encoding, accept_encoding)


@pytest.mark.parametrize(
    ("content_encoding", "accept_encoding"),
    [
        ("gzip", ""),  # an empty header accepts no coding
        ("gzip", "identity"),
        ("gzip", "deflate, br"),
        ("gzip", "gzip;q=0"),
        ("gzip", "gzip; q=0.000"),
        ("gzip", "*;q=0"),
        ("gzip", "gzip;q=0, *"),  # a coding named explicitly beats "*"
        ("gzip", "*, gzip;q=0"),
        ("gzip", "x-gzip;q=0, *"),
        ("gzip", "gzip, gzip;q=0"),  # listed twice: the lower weight
        ("gzip", "gzip;q=2"),  # a malformed weight: as if gzip were not listed
        ("gzip", "gzip;q=abc"),
        ("gzip", "gzip;q=0.0001"),
        ("gzip", "gzipped"),
        ("gzip, br", "gzip"),  # every coding applied must be acceptable
    ],
)
def test_is_acceptable_encoding__refuses(content_encoding: str, accept_encoding: str) -> None:
    assert not is_acceptable_encoding(content_encoding, accept_encoding)


def stored(*headers: tuple[str, str]) -> StoredResponse:
    return StoredResponse(status=201, headers=(("Content-Type", "text/plain"), *headers), body=b"x")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ((("Content-Encoding", "gzip"),), "Accept-Encoding"),
        ((("Content-Encoding", "gzip"), ("Vary", "Cookie")), "Cookie, Accept-Encoding"),
        ((("Content-Encoding", "gzip"), ("Vary", "accept-encoding")), "accept-encoding"),
        ((("Vary", "Cookie"),), "Cookie"),
        ((("Content-Encoding", "identity"),), None),
        ((), None),
    ],
)
def test_replay_response__varies_on_accept_encoding_when_the_body_is_coded(
    headers: tuple[tuple[str, str], ...], expected: str | None
) -> None:
    # The replay of a coded body is sent or refused by Accept-Encoding, whatever the original
    # said; an uncoded one keeps the original's Vary as it was.
    response = replay_response(stored(*headers), accept_encoding=None)

    assert response.get("Vary") == expected


def test_replay_response__names_the_refused_coding_in_the_problem() -> None:
    with pytest.raises(IdempotencyReplayNotAcceptable) as refused:
        replay_response(stored(("Content-Encoding", "gzip, br")), accept_encoding="gzip")

    assert refused.value.status_code == 406
    assert "gzip, br" in refused.value.detail


def test_replay_response__never_echoes_a_coding_that_is_not_a_name() -> None:
    with pytest.raises(IdempotencyReplayNotAcceptable) as refused:
        replay_response(stored(("Content-Encoding", "gzip <b>")), accept_encoding="identity")

    assert refused.value.detail == IdempotencyReplayNotAcceptable.default_detail
