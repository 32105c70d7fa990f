"""Requests compared by meaning: JSON and form bodies that say the same thing are one request.

Through every entry point and storage (test_behaviour's matrix): a retry from another client
library, re-encoded but equal, replays; anything that changes a value is still a mismatch;
what is not plain JSON is compared by its bytes; records made under the byte-exact
fingerprint of earlier releases are compared as those releases did.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import RequestFactory

from django_idempotency import fingerprints
from django_idempotency.canonical import NotCanonical, canonical_form, canonical_json
from django_idempotency.fingerprints import exact_fingerprint, version_of, versioned
from tests.problems import is_problem
from tests.records import rewrite_fingerprint
from tests.test_behaviour import (  # noqa: F401  (fixtures)
    Caller,
    client,
    entry_point,
    executions,
    send,
    storage,
    url,
)

pytestmark = pytest.mark.django_db(transaction=True)

FIRST = '{"label": "pay", "amount": 10.50, "items": [1, 2], "note": "caf\\u00e9"}'


@pytest.mark.parametrize(
    "retry",
    [
        '{"items":[1,2],"note":"café","amount":10.5,"label":"pay"}',  # order, spaces, escapes
        '{\n  "label": "pay",\n  "amount": 1.05e1,\n  "items": [1.0, 2],\n  "note": "café"\n}',
    ],
)
def test_a_retry_encoded_differently__replays(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    retry: str,
) -> None:
    first = send(client, url, key="k", body=FIRST)

    again = send(client, url, key="k", body=retry)

    assert again.status_code == first.status_code
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.content == first.content
    assert executions("pay") == 1


@pytest.mark.parametrize(
    "retry",
    [
        '{"label": "pay", "amount": 10.51, "items": [1, 2], "note": "café"}',  # a value
        '{"label": "pay", "amount": "10.50", "items": [1, 2], "note": "café"}',  # a type
        '{"label": "pay", "amount": 10.50, "items": [2, 1], "note": "café"}',  # an order
        '{"label": "pay", "amount": 10.50, "items": [1, 2]}',  # a field
    ],
)
def test_a_retry_that_says_something_else__is_a_mismatch(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    retry: str,
) -> None:
    send(client, url, key="k", body=FIRST)

    again = send(client, url, key="k", body=retry)

    assert is_problem(again, "idempotency_key_mismatch")
    assert executions("pay") == 1


def test_integers_past_two_to_the_53__keep_every_digit(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    # As floats, 2**53 + 1 and 2**53 are one number: a payment of another amount replayed.
    send(client, url, key="k", body='{"label": "pay", "cents": 9007199254740993}')

    again = send(client, url, key="k", body='{"label": "pay", "cents": 9007199254740992}')

    assert is_problem(again, "idempotency_key_mismatch")


@pytest.mark.parametrize(
    ("first", "same", "other"),
    [
        # Duplicate keys: parsers disagree on which wins, so the bytes decide.
        (
            '{"label": "pay", "a": 1, "a": 2}',
            '{"label": "pay", "a": 1, "a": 2}',
            '{"a": 2, "a": 1, "label": "pay"}',
        ),
        # Not JSON at all, though the content type says so.
        ('{"label": "pay", oops}', '{"label": "pay", oops}', '{"label":"pay", oops}'),
    ],
)
def test_a_body_that_is_not_plain_json__is_compared_by_its_bytes(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    first: str,
    same: str,
    other: str,
) -> None:
    original = send(client, url, key="k", body=first)

    assert send(client, url, key="k", body=same).content == original.content
    assert send(client, url, key="k", body=other).status_code in (400, 409, 422)
    assert executions() <= 1


def test_form_bodies__are_compared_by_their_fields(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    form = "application/x-www-form-urlencoded"
    first = send(client, url, key="k", body="label=pay&amount=10", content_type=form)

    again = send(client, url, key="k", body="amount=10&label=pay", content_type=form)
    other = send(client, url, key="k", body="amount=11&label=pay", content_type=form)

    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert is_problem(other, "idempotency_key_mismatch")


def test_the_exact_fingerprint__still_tells_encodings_apart(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
) -> None:
    settings.IDEMPOTENCY_FINGERPRINT = "django_idempotency.fingerprints.exact_fingerprint"
    send(client, url, key="k", body=FIRST)

    again = send(
        client, url, key="k", body='{"items":[1,2],"note":"café","amount":10.5,"label":"pay"}'
    )

    assert is_problem(again, "idempotency_key_mismatch")


# Records made before this release


def exact_digest(path: str, body: str) -> str:
    """The byte-exact fingerprint of a request as test_behaviour's send() makes it."""
    request = RequestFactory().post(path, body, content_type="application/json")
    return exact_fingerprint(request)


def test_a_record_made_under_request_1__is_compared_by_its_bytes(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    first = send(client, url, key="k", body=FIRST)
    rewrite_fingerprint("k", versioned(version_of(exact_fingerprint), exact_digest(url, FIRST)))

    retry = send(client, url, key="k", body=FIRST)

    assert retry.content == first.content
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert executions("pay") == 1


def test_a_record_from_before_versions__made_by_the_byte_exact_default__replays(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    # A bare digest (no version) was made by the default of that time: request-1's bytes.
    first = send(client, url, key="k", body=FIRST)
    rewrite_fingerprint("k", exact_digest(url, FIRST))

    retry = send(client, url, key="k", body=FIRST)

    assert retry.content == first.content
    assert executions("pay") == 1


# The canonical text itself


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("10.5", "10.50"),
        ("1", "1.0"),
        ("100", "1e2"),
        ("0", "-0.0"),
        ('"\\u00e9"', '"é"'),
        ('{"b": 1, "a": [true, null]}', '{ "a" : [ true , null ] , "b" : 1 }'),
    ],
)
def test_canonical_json__equal_values_have_one_text(one: str, other: str) -> None:
    assert canonical_json(one.encode()) == canonical_json(other.encode())


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("9007199254740993", "9007199254740992"),
        ("0.1", "0.10000000000000001"),  # one float, two decimals
        ("1", '"1"'),
        ("[1, 2]", "[2, 1]"),
        ("12345678901234567890123456789012345678901", "12345678901234567890123456789012345678900"),
    ],
)
def test_canonical_json__different_values_have_different_texts(one: str, other: str) -> None:
    assert canonical_json(one.encode()) != canonical_json(other.encode())


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 1}',
        b"NaN",
        b"[Infinity]",
        b"{oops",
        b"[" * 100_000 + b"]" * 100_000,
        b"\xff",
    ],
)
def test_canonical_json__refuses_what_is_not_plain_json(body: bytes) -> None:
    with pytest.raises(NotCanonical):
        canonical_json(body)


def test_canonical_json__a_huge_exponent_stays_short() -> None:
    # Written out as digits, 1e999999999 would be a billion characters.
    assert canonical_json(b"1e999999999") == "1e999999999"


def test_canonical_form__sorts_fields_and_refuses_bad_encodings() -> None:
    assert canonical_form(b"b=2&a=1") == canonical_form(b"a=1&b=2")
    assert canonical_form(b"a=1") != canonical_form(b"a=2")
    with pytest.raises(NotCanonical):
        canonical_form(b"\xff=1")


def test_the_default__is_request_2_and_request_1_is_still_shipped() -> None:
    assert version_of(fingerprints.default_fingerprint).startswith("request-2.")
    assert fingerprints.ALGORITHMS["request-1"] is exact_fingerprint
    assert json.dumps(sorted(fingerprints.ALGORITHMS)) == '["request-1", "request-2"]'
