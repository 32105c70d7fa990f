"""On the wire, from a live gunicorn: a replay of a compressed body decodes (issue 7, item 4).

The server is the one ``tests/test_processes.py`` runs (four sync workers on the PostgreSQL
test database, once per storage). The client is ``http.client``, which never decodes a
content coding, so the test sees the bytes exactly as the server sent them.
"""

from __future__ import annotations

import gzip
import http.client
import json
import uuid
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client

from tests import test_processes
from tests.factories import UserFactory
from tests.live_server import LiveServer
from tests.test_processes import REQUEST_SECONDS
from tests.testapp.models import Execution

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

# The live gunicorn of tests/test_processes.py (one per storage), as fixtures of this module.
server = test_processes.server
live = test_processes.live


@dataclass(frozen=True)
class WireAnswer:
    status: int
    headers: Message
    body: bytes


def post_raw(
    server: LiveServer, path: str, payload: dict[str, Any], headers: dict[str, str]
) -> WireAnswer:
    """POST and return the status, headers and body bytes exactly as they came."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(
        address.hostname or "127.0.0.1", address.port, timeout=REQUEST_SECONDS
    )
    try:
        # An explicit Accept-Encoding stops http.client from adding its own "identity".
        connection.request(
            "POST",
            path,
            body=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json", **headers},
        )
        response = connection.getresponse()
        return WireAnswer(response.status, response.headers, response.read())
    finally:
        connection.close()


def session_cookie() -> str:
    """Log a new user in, in the test database the server reads, and return its cookie."""
    client = Client()
    client.force_login(UserFactory.create())
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def test_live_replay__of_a_view_compressed_body_decodes_on_the_wire(live: LiveServer) -> None:
    label = f"gzip-{uuid.uuid4()}"
    payload = {"gzip": True, "label": label}
    headers = {"Cookie": session_cookie(), "Idempotency-Key": f"key-{uuid.uuid4()}"}

    first = post_raw(live, "/encoding/plain/", payload, {**headers, "Accept-Encoding": "gzip"})
    retry = post_raw(live, "/encoding/plain/", payload, {**headers, "Accept-Encoding": "gzip, br"})
    refused = post_raw(
        live, "/encoding/plain/", payload, {**headers, "Accept-Encoding": "identity"}
    )

    assert first.status == retry.status == 201
    assert first.headers["Content-Encoding"] == "gzip"
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.headers["Content-Encoding"] == "gzip"
    assert retry.headers["Content-Type"] == "application/json"
    assert retry.body == first.body
    assert json.loads(gzip.decompress(retry.body)) == json.loads(gzip.decompress(first.body))
    assert json.loads(gzip.decompress(retry.body))["executions"] == 1
    assert refused.status == 406
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert "Content-Encoding" not in refused.headers
    assert json.loads(refused.body)["code"] == "idempotency_replay_not_acceptable"
    assert Execution.objects.filter(label=label).count() == 1
