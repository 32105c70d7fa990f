"""Whether a response is a given idempotency error, through any entry point."""

from __future__ import annotations

from typing import Any


def is_problem(response: Any, code: str) -> bool:
    """Whether the response is the error ``code``: its problem+json, or DRF's rendering of it.

    The middleware answers a problem document; the mixin's errors go through DRF's exception
    handler, which renders ``{"detail": ...}`` and keeps the code on the ``ErrorDetail``. Either
    way the code is compared, never only the status.
    """
    if response["Content-Type"] == "application/problem+json":
        body = response.json()
        return bool(body["code"] == code and body["status"] == response.status_code)
    data = getattr(response, "data", None)
    if not isinstance(data, dict) or "detail" not in data:
        return False
    return bool(getattr(data["detail"], "code", None) == code)
