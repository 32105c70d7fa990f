"""A fingerprint of the body fields that identify the operation, named by the view or setting.

Clients that add a field changing on every retry (a timestamp, a trace id) get replays; a
change to a named field is still a mismatch. Through every entry point and storage.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from django_idempotency.decorators import idempotent
from django_idempotency.fingerprints import SelectedFields, version_of
from tests.problems import is_problem
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

FIELDS = ["label", "amount", "lines.*.sku"]


@pytest.fixture(autouse=True)
def named_fields(settings: Any) -> None:
    settings.IDEMPOTENCY_FINGERPRINT = FIELDS


def body(**changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "label": "pay",
        "amount": "10.50",
        "lines": [{"sku": "A", "note": "gift"}, {"sku": "B"}],
        "sent_at": "2026-12-04T19:00:00Z",
    }
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not None}


def test_fields_not_named__may_change_between_retries(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    first = send(client, url, body(), key="k")

    lines = [{"sku": "A", "note": "no gift"}, {"sku": "B"}]
    retry = send(client, url, body(sent_at="2026-12-04T19:00:05Z", lines=lines), key="k")

    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.content == first.content
    assert executions("pay") == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"amount": "10.51"},  # a named field
        {"amount": None},  # a named field dropped
        {"lines": [{"sku": "B"}, {"sku": "A"}]},  # a named field of every line
    ],
    ids=["changed", "dropped", "reordered-lines"],
)
def test_a_named_field_that_differs__is_a_mismatch(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    changes: dict[str, Any],
) -> None:
    send(client, url, body(), key="k")

    retry = send(client, url, body(**changes), key="k")

    assert is_problem(retry, "idempotency_key_mismatch")
    assert executions("pay") == 1


def test_a_body_that_is_not_json__counts_whole(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    form = "application/x-www-form-urlencoded"
    send(client, url, key="k", body="label=pay&sent_at=1", content_type=form)

    retry = send(client, url, key="k", body="label=pay&sent_at=2", content_type=form)

    assert is_problem(retry, "idempotency_key_mismatch")


def test_naming_other_fields__leaves_earlier_records_to_their_own_version(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
) -> None:
    # The version digests the fields: records made under the old list cannot be checked
    # under the new one, and are never run again (docs/behaviour.md, "Fingerprint versions").
    send(client, url, body(), key="k")
    settings.IDEMPOTENCY_FINGERPRINT = ["label"]

    retry = send(client, url, body(), key="k")

    assert is_problem(retry, "idempotency_fingerprint_unknown")
    assert executions("pay") == 1


def test_the_version__names_the_algorithm_and_digests_the_fields() -> None:
    assert version_of(SelectedFields(["a", "b"])).startswith("fields-1.")
    assert version_of(SelectedFields(["a", "b"])) == version_of(SelectedFields(("a", "b")))
    assert version_of(SelectedFields(["a", "b"])) != version_of(SelectedFields(["b", "a"]))


@pytest.mark.parametrize("fields", [[], [""], ["a..b"], ["a b"], [1]], ids=str)
def test_a_list_that_names_no_fields__is_refused_where_the_view_is_defined(
    fields: list[Any],
) -> None:
    with pytest.raises(ImproperlyConfigured, match="list of JSON field paths"):
        idempotent(fingerprint=fields)(lambda request: None)


def test_selected_fields__compare_hash_and_print_by_their_paths() -> None:
    fields = SelectedFields(["amount", "lines.0.sku"])

    assert fields == SelectedFields(["amount", "lines.0.sku"])
    assert fields != SelectedFields(["amount"])
    assert fields != ["amount", "lines.0.sku"]
    assert len({fields, SelectedFields(["amount", "lines.0.sku"])}) == 1
    assert repr(fields) == "SelectedFields(['amount', 'lines.0.sku'])"
    with pytest.raises(ValueError, match="not a list of field paths"):
        SelectedFields([])


def test_an_index_path_and_a_body_too_deep__fingerprint_by_the_field_or_whole() -> None:
    from django.test import RequestFactory

    fields = SelectedFields(["lines.0.sku"])

    def of(body: str) -> str:
        request = RequestFactory().post("/pay/", body, content_type="application/json")
        return fields(request)

    assert of('{"lines": [{"sku": "a", "n": 1}]}') == of('{"lines": [{"sku": "a", "n": 2}]}')
    assert of('{"lines": [{"sku": "a"}]}') != of('{"lines": [{"sku": "b"}]}')
    deep = '{"lines": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert of(deep) != of('{"lines": []}')  # too deep to read: counted whole, never a 500
