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
from django.utils.cache import cc_delim_re

from tests.factories import UserFactory
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
    client.force_login(UserFactory())
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
    return [name.lower() for name in cc_delim_re.split(response.get("Vary", "")) if name]


def is_problem(response: Any, code: str) -> bool:
    """Whether the response is this error: problem+json, or DRF's rendering of it."""
    if response["Content-Type"] == "application/problem+json":
        body = response.json()
        return bool(body["code"] == code and body["status"] == response.status_code)
    # The mixin's errors go through DRF's exception handler, which keeps the code here.
    return bool(response.data["detail"].code == code)


def decoded(response: Any) -> dict[str, Any]:
    """Return the JSON body, decoded as its Content-Encoding says."""
    body = response.content
    if response.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    data = json.loads(body)
    assert isinstance(data, dict)
    return data


# A view that compresses its own body


def test_replay__carries_the_views_content_encoding_with_the_same_bytes(send: Send, url: str):
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


def test_replay__refused_coding_is_a_406_problem_not_unreadable_bytes(send: Send, url: str):
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


def test_replay__carries_the_vary_header_of_the_original(send: Send, url: str):
    send(url, {"vary": "Accept-Language"})
    retry = send(url, {"vary": "Accept-Language"})

    assert retry["Idempotent-Replayed"] == "true"
    assert "accept-language" in vary(retry)
    assert "Content-Encoding" not in retry


# GZipMiddleware


def test_gzip_middleware_outside__compresses_each_replay_for_its_retry(
    send: Send, url: str, settings: Any
):
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
):
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
):
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
