"""Property-based: no key, header, query or body makes the layer answer 5xx."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_idempotency.exceptions import IdempotencyKeyInvalid
from django_idempotency.keys import parse_key
from django_idempotency.models import IdempotencyKey

pytestmark = pytest.mark.django_db

URLS = ["/drf/required/", "/plain/behave/", "/decorated/behave/", "/api/orders/"]
CONTENT_TYPES = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "multipart/form-data",
    "text/plain",
    "application/octet-stream",
    "",
]

# Header values as a WSGI server hands them over: latin-1 text, and anything at all.
header_values = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=300),
    st.text(max_size=50),
    st.from_regex(r'\A"([ -!#-\[\]-~]|\\["\\])*"\Z'),
    st.from_regex(r"\A[!-~]{1,255}\Z"),
)

fuzz = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


#: A caller the layer can scope (keyed requests without one are refused before a claim).
CALLER = "Bearer fuzz-caller"


@fuzz
@given(raw=header_values)
def test_parse_key__returns_visible_ascii_or_raises_invalid(raw: str) -> None:
    try:
        key = parse_key(raw)
    except IdempotencyKeyInvalid:
        return
    assert 1 <= len(key) <= 255
    assert all("\x21" <= char <= "\x7e" for char in key)


@fuzz
@given(key=st.from_regex(r"\A[!-~]{1,255}\Z"))
def test_parse_key__sf_string_quoting_round_trips(key: str) -> None:
    quoted = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'

    assert parse_key(quoted) == key
    if not set(key) & set('"\\,'):  # what a bare key may hold
        assert parse_key(key) == key


@fuzz
@given(
    url=st.sampled_from(URLS),
    key=st.one_of(st.none(), header_values),
    content_type=st.sampled_from(CONTENT_TYPES),
    body=st.binary(max_size=512),
    query=st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=40),
    method=st.sampled_from(["post", "patch", "delete", "put"]),
)
def test_any_request__never_gets_a_5xx_from_the_layer(
    url: str, key: str | None, content_type: str, body: bytes, query: str, method: str
) -> None:
    client = Client(raise_request_exception=False)
    headers: dict[str, Any] = {"Authorization": CALLER}
    if key is not None:
        headers["Idempotency-Key"] = key
    first = getattr(client, method)(
        f"{url}?{query}", body, content_type=content_type, headers=headers
    )
    again = getattr(client, method)(
        f"{url}?{query}", body, content_type=content_type, headers=headers
    )

    assert first.status_code < 500, first.content
    assert again.status_code < 500, again.content


@fuzz
@given(key=header_values, body=st.binary(max_size=256))
def test_rejected_request__leaves_no_half_written_record(key: str, body: bytes) -> None:
    client = Client(raise_request_exception=False)
    before = set(IdempotencyKey.objects.values_list("pk", "state"))

    response = client.post(
        "/decorated/behave/",
        body,
        content_type="application/json",
        headers={"Idempotency-Key": key, "Authorization": CALLER},
    )

    after = set(IdempotencyKey.objects.values_list("pk", "state"))
    assert not IdempotencyKey.objects.filter(state=IdempotencyKey.State.IN_FLIGHT).exists()
    if response.status_code >= 400:
        assert after == before
