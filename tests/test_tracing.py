"""OpenTelemetry spans of the store calls, recorded by a real SDK through every entry point.

The matrix of test_behaviour (storage x entry point x sync/async), asked what an in-memory
exporter received; and a project started without the setting imports no OpenTelemetry.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from django_idempotency import checks, tracing
from django_idempotency.outcomes import key_hash
from tests.test_behaviour import (  # noqa: F401  (fixtures)
    Caller,
    broken_store,
    client,
    entry_point,
    send,
    storage,
    url,
)

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans of this test, as a configured SDK would export them."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    yield exporter
    tracing.uninstall()


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_first_request__is_a_claim_span_and_a_complete_span(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    spans: InMemorySpanExporter,
) -> None:
    send(client, url, {"label": "pay"}, key="secret-key")

    claim, complete = spans.get_finished_spans()
    assert (claim.name, complete.name) == ("idempotency claim", "idempotency complete")
    assert attributes(claim)["idempotency.outcome"] == "claimed"
    assert attributes(complete)["idempotency.outcome"] == "completed"
    assert attributes(complete)["http.response.status_code"] == 201
    assert attributes(claim)["http.request.method"] == "POST"
    assert attributes(claim)["idempotency.key_hash"] == key_hash("secret-key")
    assert attributes(claim)["idempotency.scope_kind"] == "user"
    # Timed as the store call was: it ended before the next one began.
    assert claim.start_time is not None
    assert claim.end_time is not None
    assert complete.start_time is not None
    assert claim.start_time < claim.end_time <= complete.start_time
    # Never the key, the scope's principal or a body.
    for span in (claim, complete):
        assert "secret-key" not in json.dumps(attributes(span))
        assert "user:" not in json.dumps(attributes(span))


def test_replay__is_one_claim_span_saying_replayed(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    spans: InMemorySpanExporter,
) -> None:
    send(client, url, {"label": "pay"}, key="k")
    spans.clear()

    send(client, url, {"label": "pay"}, key="k")

    (replay,) = spans.get_finished_spans()
    assert attributes(replay)["idempotency.outcome"] == "replayed"


@pytest.mark.usefixtures("broken_store")
def test_store_down__is_an_error_span_with_the_exception(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    spans: InMemorySpanExporter,
) -> None:
    send(client, url, {"label": "pay"}, key="k")

    (failed,) = spans.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert [event.name for event in failed.events] == ["exception"]


def test_uninstalled__no_span_is_made(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    spans: InMemorySpanExporter,
) -> None:
    tracing.uninstall()

    send(client, url, {"label": "pay"}, key="k")

    assert spans.get_finished_spans() == ()


def test_check__refuses_tracing_without_opentelemetry(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.IDEMPOTENCY_TRACING = True
    monkeypatch.setattr(checks, "_has_module", lambda name: name != "opentelemetry.trace")

    (error,) = checks.check_integrations(None)

    assert error.id == "django_idempotency.E007"


_PROBE = """
import json, sys
import tests.settings
tests.settings.IDEMPOTENCY_TRACING = {setting}
import django
django.setup()
from django_idempotency.signals import idempotency_claimed
print(json.dumps({{"imported": "opentelemetry" in sys.modules,
                   "receivers": len(idempotency_claimed.receivers)}}))
"""


@pytest.mark.parametrize("setting", [False, True])
def test_setting__decides_at_startup_whether_opentelemetry_is_imported(setting: bool) -> None:
    run = subprocess.run(
        [sys.executable, "-c", _PROBE.format(setting=setting)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
    assert run.returncode == 0, run.stderr

    result = json.loads(run.stdout.strip().splitlines()[-1])

    assert result == {"imported": setting, "receivers": 1 if setting else 0}


def outcome_of(**details: Any) -> dict[str, Any]:
    """The arguments an outcome signal carries, for one store call."""
    from django_idempotency.outcomes import Outcome

    return {
        "outcome": Outcome.CLAIMED,
        "operation": "claim",
        "store_seconds": 0.001,
        "key": "k",
        "scope": "user:auth.user:1",
        "method": "POST",
        "view": "orders:create",
        "status": None,
        "error": None,
        **details,
    }


def test_an_outcome_without_a_store_call__makes_no_span(spans: InMemorySpanExporter) -> None:
    receiver = tracing._installed
    assert receiver is not None
    receiver.receive(None, **outcome_of(operation=None, store_seconds=None))

    assert spans.get_finished_spans() == ()


def test_an_unresolved_view_and_a_failure_without_an_exception__still_make_a_span(
    spans: InMemorySpanExporter,
) -> None:
    from django_idempotency.outcomes import Outcome

    receiver = tracing._installed
    assert receiver is not None
    receiver.receive(None, **outcome_of(view="", outcome=Outcome.STORE_UNAVAILABLE))

    (span,) = spans.get_finished_spans()
    assert "idempotency.view" not in attributes(span)
    assert span.status.status_code is StatusCode.ERROR
    assert span.events == ()


def test_with_the_global_provider__spans_are_built_only_once_an_sdk_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import trace

    tracing.install()  # the global provider: the API's proxy until a project sets one
    try:
        receiver = tracing._installed
        assert receiver is not None
        assert not tracing._sdk_configured()
        receiver.receive(None, **outcome_of())  # builds nothing: no SDK would record it

        monkeypatch.setattr(trace, "get_tracer_provider", TracerProvider)
        assert tracing._sdk_configured()
    finally:
        tracing.uninstall()
