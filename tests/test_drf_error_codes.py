"""Behind the DRF mixin, every error body carries its stable code, so clients can act on it.

Under DRF's default exception handler a body was ``{"detail": "..."}`` alone: a 409 "in
progress" (retry later) and a 409 "not replayable" (do not retry) differed only by
``Retry-After``. Now the body is ``{"detail": ..., "code": ...}``; a project's own handler
still receives the exception and renders its own format, untouched. On both storages.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import override_settings
from rest_framework.exceptions import APIException
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tests.test_behaviour import (  # noqa: F401  (fixtures)
    Caller,
    claim_in_flight,
    client,
    entry_point,
    send,
    storage,
    through,
    url,
)

pytestmark = [pytest.mark.django_db(transaction=True), through("mixin")]


def test_in_progress__says_its_code_beside_the_detail(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    claim_in_flight(client, url, {"label": "pay"}, "k", timedelta(minutes=5))

    response = send(client, url, {"label": "pay"}, key="k")

    assert response.status_code == 409
    assert response.json() == {
        "detail": "A request with this Idempotency-Key is still being processed; retry later.",
        "code": "idempotency_key_in_progress",
    }
    assert response["Retry-After"] == "1"


@pytest.mark.parametrize(
    ("key", "body", "status", "code"),
    [
        (None, {"label": "pay"}, 400, "idempotency_key_missing"),
        ("x" * 300, {"label": "pay"}, 400, "idempotency_key_invalid"),
        ("k", {"label": "other"}, 422, "idempotency_key_mismatch"),
    ],
)
def test_every_error__says_its_code(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    key: str | None,
    body: dict[str, Any],
    status: int,
    code: str,
) -> None:
    send(client, url, {"label": "pay"}, key="k")

    response = send(client, url, body, key=key)

    assert response.status_code == status
    assert response.json()["code"] == code
    assert set(response.json()) == {"detail", "code"}


def project_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """A project's own format: the code it read off the exception, under its own name."""
    response = exception_handler(exc, context)
    if response is not None and isinstance(exc, APIException):
        message = str(response.data["detail"])
        response.data = {"error": {"message": message, "kind": exc.get_codes()}}
    return response


def test_a_projects_own_handler__gets_the_exception_and_keeps_its_format(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
) -> None:
    claim_in_flight(client, url, {"label": "pay"}, "k", timedelta(minutes=5))
    rest_framework = {**settings.REST_FRAMEWORK, "EXCEPTION_HANDLER": f"{__name__}.project_handler"}

    with override_settings(REST_FRAMEWORK=rest_framework):
        response = send(client, url, {"label": "pay"}, key="k")

    assert response.status_code == 409
    assert response.json() == {
        "error": {
            "message": "A request with this Idempotency-Key is still being processed; retry later.",
            "kind": "idempotency_key_in_progress",
        }
    }
