"""``IDEMPOTENCY_HEADER`` renames the header: keys are read from it, and errors name it.

A client told to send ``X-Request-Key`` must not be answered about ``Idempotency-Key``
(docs/settings.md, ``IDEMPOTENCY_HEADER``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.test import Client

from tests.factories import UserFactory
from tests.problems import is_problem

pytestmark = pytest.mark.django_db

HEADER = "X-Request-Key"

#: A view of each entry point that creates an order for a keyed POST.
ENTRY_POINTS = {
    "mixin": "/drf/behave/",
    "middleware": "/plain/behave/",
    "decorator": "/decorated/behave/",
}


@pytest.fixture(autouse=True)
def renamed_header(settings: Any) -> None:
    settings.IDEMPOTENCY_HEADER = HEADER


@pytest.fixture(params=list(ENTRY_POINTS.values()), ids=list(ENTRY_POINTS))
def url(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def client() -> Client:
    client = Client()
    client.force_login(UserFactory.create())
    return client


def post(client: Client, url: str, headers: dict[str, str]) -> Any:
    return client.post(url, {"label": "order"}, content_type="application/json", headers=headers)


def detail(response: Any) -> str:
    if response["Content-Type"] == "application/problem+json":
        return str(response.json()["detail"])
    return str(json.loads(response.content)["detail"])


def test_header_setting__a_key_in_the_renamed_header_is_replayed(client: Client, url: str) -> None:
    key = str(uuid.uuid4())

    first = post(client, url, {HEADER: key})
    retry = post(client, url, {HEADER: key})

    assert first.status_code == 201
    assert retry.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.content == first.content


def test_header_setting__the_default_header_is_not_read(
    client: Client, url: str, settings: Any
) -> None:
    settings.IDEMPOTENCY_REQUIRED = True

    response = post(client, url, {"Idempotency-Key": str(uuid.uuid4())})

    assert response.status_code == 400
    assert is_problem(response, "idempotency_key_missing")
    assert HEADER in detail(response)
    assert "Idempotency-Key" not in detail(response)


@pytest.mark.parametrize("malformed", ["", "a,b", "x" * 256, '"unclosed'])
def test_header_setting__a_malformed_key_is_explained_with_the_renamed_header(
    client: Client, url: str, malformed: str
) -> None:
    response = post(client, url, {HEADER: malformed})

    assert response.status_code == 400
    assert is_problem(response, "idempotency_key_invalid")
    assert f"The {HEADER} header" in detail(response)
    assert "Idempotency-Key" not in detail(response)


def test_header_setting__a_conflict_names_the_renamed_header(client: Client, url: str) -> None:
    key = str(uuid.uuid4())
    post(client, url, {HEADER: key})

    reused = client.post(
        url, {"label": "another"}, content_type="application/json", headers={HEADER: key}
    )

    assert is_problem(reused, "idempotency_key_mismatch")
    assert HEADER in detail(reused)
    assert "Idempotency-Key" not in detail(reused)
