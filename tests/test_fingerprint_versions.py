"""A retry is compared under the fingerprint version of its record (docs/behaviour.md).

Records are stored under one version, the deploy changes the fingerprint (a setting, or a
release that ships a new algorithm), and the retry comes in under the new one: through the
matrix of test_behaviour, every entry point on both storages.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import pytest
from django.http import HttpRequest

from django_idempotency import fingerprints
from django_idempotency.fingerprints import default_fingerprint, version_of
from tests.problems import is_problem
from tests.records import rewrite_fingerprint, stored_fingerprint
from tests.test_behaviour import (  # the matrix's fixtures, shared
    Caller,
    client,  # noqa: F401
    entry_point,  # noqa: F401
    executions,
    send,
    storage,  # noqa: F401
    url,  # noqa: F401
)

pytestmark = pytest.mark.django_db(transaction=True)


def path_only(request: HttpRequest) -> str:
    """A fingerprint that ignores the body: it would call any two bodies the same request."""
    return hashlib.sha256(request.path.encode()).hexdigest()


def test_record__keeps_the_version_of_its_fingerprint(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    send(client, url, {"label": "pay"}, key="k")

    version, digest = fingerprints.split(stored_fingerprint("k"))
    assert version == version_of(default_fingerprint)
    assert version is not None
    assert version.startswith("request-2.")
    assert len(digest) == 64


def test_switch_to_a_custom_fingerprint__earlier_records_compared_under_theirs(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
) -> None:
    first = send(client, url, {"label": "pay"}, key="k")

    settings.IDEMPOTENCY_FINGERPRINT = path_only
    retry = send(client, url, {"label": "pay"}, key="k")
    other = send(client, url, {"label": "refund"}, key="k")

    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    # Under the new fingerprint the two bodies are one request; under the record's they differ.
    assert is_problem(other, "idempotency_key_mismatch")
    assert executions() == 1


def test_a_release_with_a_new_algorithm__earlier_records_compared_under_the_old(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = send(client, url, {"label": "pay"}, key="k")

    # The next release: a new default algorithm, and the old one still shipped.
    monkeypatch.setitem(fingerprints.ALGORITHMS, "request-9", path_only)
    settings.IDEMPOTENCY_FINGERPRINT = path_only
    assert version_of(path_only).startswith("request-9.")
    retry = send(client, url, {"label": "pay"}, key="k")
    other = send(client, url, {"label": "refund"}, key="k")
    new_key = send(client, url, {"label": "pay"}, key="new")

    assert retry.status_code == 201
    assert retry.content == first.content
    assert is_problem(other, "idempotency_key_mismatch")
    assert new_key.status_code == 201
    assert fingerprints.split(stored_fingerprint("new"))[0] == version_of(path_only)
    assert executions() == 2


def test_a_version_no_longer_computed__is_422_and_never_runs(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
) -> None:
    versioned = functools.partial(path_only)  # a function of its own, to give a version
    versioned.fingerprint_version = "1"  # type: ignore[attr-defined]
    settings.IDEMPOTENCY_FINGERPRINT = versioned
    send(client, url, {"label": "pay"}, key="k")

    versioned.fingerprint_version = "2"  # type: ignore[attr-defined]  # it computes anew
    settings.IDEMPOTENCY_FINGERPRINT = versioned
    retry = send(client, url, {"label": "pay"}, key="k")

    assert retry.status_code == 422
    assert is_problem(retry, "idempotency_fingerprint_unknown")
    assert executions() == 1


def test_a_version_no_longer_computed__answers_the_mismatch_status(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
) -> None:
    send(client, url, {"label": "pay"}, key="k")
    rewrite_fingerprint("k", "custom.0badc0de:" + "0" * 64)

    settings.IDEMPOTENCY_MISMATCH_STATUS = 409
    retry = send(client, url, {"label": "pay"}, key="k")

    assert retry.status_code == 409
    assert is_problem(retry, "idempotency_fingerprint_unknown")
    assert executions() == 1


def test_a_record_from_before_versions__compared_as_that_release_did(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    first = send(client, url, {"label": "pay"}, key="k")
    _version, digest = fingerprints.split(stored_fingerprint("k"))
    rewrite_fingerprint("k", digest)  # as the release before versions stored it

    retry = send(client, url, {"label": "pay"}, key="k")
    other = send(client, url, {"label": "refund"}, key="k")

    assert retry.status_code == 201
    assert retry.content == first.content
    assert is_problem(other, "idempotency_key_mismatch")
    assert executions() == 1
