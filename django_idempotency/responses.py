"""HTTP responses the engine builds: problem details (RFC 9457) and replays."""

from __future__ import annotations

import json
import re

from django.http import HttpResponse
from django.http.response import HttpResponseBase
from django.utils.cache import patch_vary_headers

from django_idempotency.exceptions import (
    IdempotencyError,
    IdempotencyReplayNotAcceptable,
    problem_type,
)
from django_idempotency.storage.base import StoredResponse

REPLAYED_HEADER = "Idempotent-Replayed"
PROBLEM_CONTENT_TYPE = "application/problem+json"

# RFC 9110 §8.4.1.1, §8.4.1.3: a recipient treats the "x-" names as the same codings.
_CODING_ALIASES = {"x-gzip": "gzip", "x-compress": "compress"}
# RFC 9110 §12.4.2: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
# RFC 9110 §5.6.2: a token, which every content-coding name is.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def problem_document(*, code: str, title: str, status: int, detail: str) -> bytes:
    """Return the body of an ``application/problem+json`` document (RFC 9457) for ``code``."""
    body = {
        "type": problem_type(code),
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    return json.dumps(body).encode()


def problem_response(error: IdempotencyError) -> HttpResponse:
    """Return ``error`` as an ``application/problem+json`` response."""
    body = problem_document(
        code=error.default_code,
        title=error.title,
        status=error.status_code,
        detail=error.detail,
    )
    response = HttpResponse(body, status=error.status_code, content_type=PROBLEM_CONTENT_TYPE)
    if error.retry_after_seconds is not None:
        response["Retry-After"] = str(error.retry_after_seconds)
    return response


def replay_response(stored: StoredResponse, *, accept_encoding: str | None) -> HttpResponse:
    """Return the stored response again: same status, body bytes and allow-listed headers.

    ``accept_encoding`` is the retry's Accept-Encoding header (None when it has none). Raise
    ``IdempotencyReplayNotAcceptable`` when it refuses the stored body's content coding.
    """
    content_encoding = ", ".join(
        value for name, value in stored.headers if name.lower() == "content-encoding"
    )
    if not is_acceptable_encoding(content_encoding, accept_encoding):
        raise IdempotencyReplayNotAcceptable(_not_acceptable_detail(content_encoding))
    response = HttpResponse(stored.body, status=stored.status)
    del response["Content-Type"]
    for name, value in stored.headers:
        response[name] = value
    if _content_codings(content_encoding):
        # Whether this replay is sent or refused depends on Accept-Encoding (RFC 9110 §12.5.5).
        patch_vary_headers(response, ["Accept-Encoding"])
    response[REPLAYED_HEADER] = "true"
    return response


def is_acceptable_encoding(content_encoding: str, accept_encoding: str | None) -> bool:
    """Whether a body coded as ``content_encoding`` may answer ``accept_encoding`` (RFC 9110).

    ``accept_encoding`` is None when the request has no Accept-Encoding header.
    """
    codings = _content_codings(content_encoding)
    if not codings or accept_encoding is None:
        # §12.5.3: no header accepts any coding; an uncoded body is never refused (the view
        # itself would have answered with it).
        return True
    weights = _accepted_weights(accept_encoding)
    # §12.5.3: a coding listed by name has its own weight, others the weight of "*", and a
    # coding neither names nor "*" covers is not acceptable (an empty header accepts none).
    wildcard = weights.get("*", 0.0)
    return all(weights.get(coding, wildcard) > 0 for coding in codings)


def _content_codings(content_encoding: str) -> list[str]:
    """Return the codings a Content-Encoding value lists, normalized, without ``identity``."""
    codings = (_normalized(coding) for coding in content_encoding.split(","))
    return [coding for coding in codings if coding and coding != "identity"]


def _accepted_weights(accept_encoding: str) -> dict[str, float]:
    """Return the weight of each coding an Accept-Encoding value lists.

    A member whose weight is malformed counts as not listed. A coding listed twice keeps its
    lower weight: sending a body the client may not decode is the worse mistake.
    """
    weights: dict[str, float] = {}
    for member in accept_encoding.split(","):
        coding, *parameters = member.split(";")
        name = _normalized(coding)
        if not name:
            continue  # §5.6.1: empty list elements are allowed and ignored
        weight: float | None = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                weight = float(value) if _QVALUE.fullmatch(value) else None
        if weight is not None:
            weights[name] = min(weight, weights.get(name, weight))
    return weights


def _normalized(coding: str) -> str:
    name = coding.strip().lower()
    return _CODING_ALIASES.get(name, name)


def _not_acceptable_detail(content_encoding: str) -> str | None:
    codings = _content_codings(content_encoding)
    if not all(_TOKEN.fullmatch(coding) for coding in codings):
        return None  # the default detail, rather than echo a header that is not a list of names
    named = ", ".join(codings)
    return (
        f"The response stored for this Idempotency-Key is encoded with {named}, which this "
        "request's Accept-Encoding does not accept. The request was not run again; retry with "
        f"an Accept-Encoding that accepts {named}, or without one."
    )


def is_storable(response: HttpResponseBase, max_size: int) -> bool:
    """Whether the response's body is in memory and within ``max_size`` bytes."""
    if response.streaming or not isinstance(response, HttpResponse):
        return False
    return len(response.content) <= max_size
