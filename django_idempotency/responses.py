"""HTTP responses the engine builds: problem details (RFC 9457) and replays."""

from __future__ import annotations

import json

from django.http import HttpResponse
from django.http.response import HttpResponseBase

from django_idempotency.exceptions import IdempotencyError
from django_idempotency.storage.base import StoredResponse

REPLAYED_HEADER = "Idempotent-Replayed"
PROBLEM_CONTENT_TYPE = "application/problem+json"


def problem_response(error: IdempotencyError) -> HttpResponse:
    """Return ``error`` as an ``application/problem+json`` response."""
    body = {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status_code,
        "detail": error.detail,
        "code": error.default_code,
    }
    response = HttpResponse(
        json.dumps(body), status=error.status_code, content_type=PROBLEM_CONTENT_TYPE
    )
    if error.retry_after_seconds is not None:
        response["Retry-After"] = str(error.retry_after_seconds)
    return response


def replay_response(stored: StoredResponse) -> HttpResponse:
    """Return the stored response again: same status, body bytes and allow-listed headers."""
    response = HttpResponse(stored.body, status=stored.status)
    del response["Content-Type"]
    for name, value in stored.headers:
        response[name] = value
    response[REPLAYED_HEADER] = "true"
    return response


def is_storable(response: HttpResponseBase, max_size: int) -> bool:
    """Whether the response's body is in memory and within ``max_size`` bytes."""
    if response.streaming or not isinstance(response, HttpResponse):
        return False
    return len(response.content) <= max_size
