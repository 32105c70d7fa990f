"""IDEMPOTENCY_DISABLED switches the layer off for tests; check E008 keeps it out of production."""

from __future__ import annotations

from typing import Any

import pytest

from django_idempotency import checks
from tests.records import stored_records
from tests.test_behaviour import (  # noqa: F401  (fixtures)
    Caller,
    client,
    entry_point,
    executions,
    send,
    storage,
    url,
)


@pytest.mark.django_db(transaction=True)
def test_disabled__every_request_runs_and_nothing_is_stored(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
) -> None:
    settings.IDEMPOTENCY_DISABLED = True

    first = send(client, url, {"label": "pay"}, key="k")
    again = send(client, url, {"label": "pay"}, key="k")
    without_key = send(client, url, {"label": "pay"})  # every view here requires a key

    assert [first.status_code, again.status_code, without_key.status_code] == [201] * 3
    assert "Idempotent-Replayed" not in again.headers
    assert executions("pay") == 3
    assert stored_records() == []


@pytest.mark.parametrize(("debug", "errors"), [(False, ["django_idempotency.E008"]), (True, [])])
def test_check__refuses_disabled_without_debug(
    settings: Any, debug: bool, errors: list[str]
) -> None:
    settings.IDEMPOTENCY_DISABLED = True
    settings.DEBUG = debug

    assert [message.id for message in checks.check_disabled_in_production(None)] == errors


def test_check__says_nothing_when_the_layer_is_on(settings: Any) -> None:
    settings.DEBUG = False

    assert checks.check_disabled_in_production(None) == []
