"""Prometheus metrics of the outcomes, counted from their signals (the ``metrics`` extra).

Imported only when ``IDEMPOTENCY_METRICS = True`` (``apps.ready()``) or by a project that calls
``install()`` itself; nothing else in the package imports ``prometheus_client``
(docs/metrics.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from django_idempotency.outcomes import TELLINGS, Outcome

#: Store calls take a fraction of a millisecond to a few; a timeout takes seconds.
STORE_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


@dataclass(frozen=True)
class Metrics:
    """The metrics ``install()`` registered, and the receiver that feeds them."""

    outcomes: Counter
    store_seconds: Histogram
    registry: CollectorRegistry

    def receive(self, sender: Any, **kwargs: Any) -> None:
        outcome: Outcome = kwargs["outcome"]
        self.outcomes.labels(
            outcome=outcome.value, method=kwargs["method"], view=kwargs["view"]
        ).inc()
        seconds = kwargs.get("store_seconds")
        if seconds is not None:
            self.store_seconds.labels(operation=kwargs["operation"], outcome=outcome.value).observe(
                seconds
            )


_installed: dict[int, Metrics] = {}


def install(registry: CollectorRegistry = REGISTRY) -> Metrics:
    """Register the metrics in ``registry`` and count every outcome from now on.

    Once per registry: a second call returns the metrics of the first.
    """
    metrics = _installed.get(id(registry))
    if metrics is not None:
        return metrics
    metrics = Metrics(
        outcomes=Counter(
            "django_idempotency_outcomes",
            "Keyed requests by outcome (claimed, replayed, mismatch...), method and view name.",
            ("outcome", "method", "view"),
            registry=registry,
        ),
        store_seconds=Histogram(
            "django_idempotency_store_seconds",
            "Time of each call to the idempotency store, by operation and the outcome it gave.",
            ("operation", "outcome"),
            buckets=STORE_SECONDS_BUCKETS,
            registry=registry,
        ),
        registry=registry,
    )
    for telling in TELLINGS.values():
        telling.signal.connect(metrics.receive, weak=False, dispatch_uid=_uid(registry))
    _installed[id(registry)] = metrics
    return metrics


def uninstall(registry: CollectorRegistry = REGISTRY) -> None:
    """Stop counting into ``registry`` and unregister its metrics (for tests)."""
    metrics = _installed.pop(id(registry), None)
    if metrics is None:
        return
    for telling in TELLINGS.values():
        telling.signal.disconnect(dispatch_uid=_uid(registry))
    registry.unregister(metrics.outcomes)
    registry.unregister(metrics.store_seconds)


def _uid(registry: CollectorRegistry) -> str:
    return f"django_idempotency.metrics:{id(registry)}"


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve the default registry in Prometheus's text format, for a project's ``/metrics``.

    Every metric of the process is served, not only this app's. Route it where only your
    Prometheus reaches it (docs/metrics.md); django-prometheus users need no view of ours.
    """
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
