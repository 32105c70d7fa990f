"""OpenTelemetry spans of the store calls, made from the outcome signals (the ``tracing`` extra).

Imported only when ``IDEMPOTENCY_TRACING = True`` (``apps.ready()``) or by a project that calls
``install()`` itself; nothing else in the package imports ``opentelemetry``. Each outcome that
came from a store call (claim, complete, release) becomes one span, timed as the call was
and named ``idempotency <operation>``, a child of the request's span where one is current.
Only the API is needed: without an SDK its tracer records nothing (docs/observability.md,
"Tracing").
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import (
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanKind,
    Status,
    StatusCode,
    TracerProvider,
)

from django_idempotency.outcomes import TELLINGS, Outcome, key_hash, scope_kind

#: The instrumentation's name, as OpenTelemetry asks of a library.
INSTRUMENTATION_NAME = "django_idempotency"
_UID = "django_idempotency.tracing"
#: The outcomes whose span is an error: the store failed, or the view ran unprotected.
_FAILED = frozenset({Outcome.STORE_UNAVAILABLE, Outcome.FAILED_OPEN})


class _Spans:
    """The receiver that turns each outcome of a store call into its span."""

    def __init__(self, tracer_provider: TracerProvider | None) -> None:
        self.tracer_provider = tracer_provider
        self.tracer = trace.get_tracer(INSTRUMENTATION_NAME, tracer_provider=tracer_provider)

    def receive(self, sender: Any, **kwargs: Any) -> None:
        operation, seconds = kwargs.get("operation"), kwargs.get("store_seconds")
        if operation is None or seconds is None:
            return  # no store call made this outcome
        if self.tracer_provider is None and not _sdk_configured():
            return  # the API's no-op tracer would drop the span: build none
        outcome: Outcome = kwargs["outcome"]
        end = time.time_ns()
        attributes: dict[str, str | int] = {
            "idempotency.outcome": outcome.value,
            "idempotency.operation": operation,
            "idempotency.key_hash": key_hash(kwargs["key"]),
            "idempotency.scope_kind": scope_kind(kwargs["scope"]),
            "http.request.method": kwargs["method"],
        }
        if kwargs["view"]:
            attributes["idempotency.view"] = kwargs["view"]
        if kwargs.get("status") is not None:
            attributes["http.response.status_code"] = kwargs["status"]
        span = self.tracer.start_span(
            f"idempotency {operation}",
            kind=SpanKind.INTERNAL,
            start_time=end - int(seconds * 1e9),
            attributes=attributes,
        )
        error = kwargs.get("error")
        if outcome in _FAILED:
            if error is not None:
                span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, outcome.value))
        span.end(end_time=end)


def _sdk_configured() -> bool:
    """Whether a project set a global tracer provider (an SDK's) that records spans."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, ProxyTracerProvider | NoOpTracerProvider)


_installed: _Spans | None = None


def install(tracer_provider: TracerProvider | None = None) -> None:
    """Make a span of every store call from now on, with ``tracer_provider`` or the global one.

    Once: a second call replaces the first's provider.
    """
    global _installed
    uninstall()
    _installed = _Spans(tracer_provider)
    for telling in TELLINGS.values():
        telling.signal.connect(_installed.receive, weak=False, dispatch_uid=_UID)


def uninstall() -> None:
    """Stop making spans (for tests)."""
    global _installed
    for telling in TELLINGS.values():
        telling.signal.disconnect(dispatch_uid=_UID)
    _installed = None
