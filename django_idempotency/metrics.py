"""Prometheus metrics of the outcomes, counted from their signals (the ``metrics`` extra).

Imported only when ``IDEMPOTENCY_METRICS = True`` (``apps.ready()``) or by a project that calls
``install()`` itself; nothing else in the package imports ``prometheus_client``
(docs/metrics.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from django_idempotency.outcomes import TELLINGS, Outcome
from django_idempotency.storage.base import Census, Storage, StorageUnavailable
from django_idempotency.storage.registry import configured_storage

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


class CensusCollector(Collector):
    """Gauges of the keys a storage holds, read from its census at every scrape.

    A store that does not answer sets ``django_idempotency_census_up`` to 0 and exports no
    counts: the scrape itself never fails. A storage without a census exports nothing.
    """

    def __init__(self, storage: Callable[[], Storage]) -> None:
        self.storage = storage

    def describe(self) -> Iterator[Metric]:
        # Without describe(), registering would collect(), querying the store at startup.
        yield from self._families("").values()

    def collect(self) -> Iterator[Metric]:
        try:
            storage = self.storage()
        except ImproperlyConfigured:  # the system checks and every request say why
            return
        name = type(storage).__name__
        families = self._families(name)
        try:
            census = storage.census()
        except StorageUnavailable:
            families["up"].add_metric([name], 0)
            yield families["up"]
            return
        if census is None:
            return
        families["up"].add_metric([name], 1)
        _add_census(families, name, census)
        yield from families.values()

    @staticmethod
    def _families(storage: str) -> dict[str, GaugeMetricFamily]:
        return {
            "up": GaugeMetricFamily(
                "django_idempotency_census_up",
                "1 if the idempotency store answered the census at this scrape, else 0.",
                labels=("storage",),
            ),
            "keys": GaugeMetricFamily(
                "django_idempotency_keys",
                "Keys the store holds by state; an estimate or a lower bound where "
                "django_idempotency_keys_exact is 0.",
                labels=("storage", "state"),
            ),
            "exact": GaugeMetricFamily(
                "django_idempotency_keys_exact",
                "1 where django_idempotency_keys was counted, 0 where estimated or sampled.",
                labels=("storage", "state"),
            ),
            "oldest_in_flight": GaugeMetricFamily(
                "django_idempotency_oldest_in_flight_seconds",
                "How long the oldest in-flight key has run (0 when none is in flight).",
                labels=("storage",),
            ),
            "oldest_expired": GaugeMetricFamily(
                "django_idempotency_oldest_expired_seconds",
                "How long ago the oldest record waiting for the purge expired (0 when none).",
                labels=("storage",),
            ),
        }


def _add_census(families: dict[str, GaugeMetricFamily], storage: str, census: Census) -> None:
    for state, count in census.counts().items():
        families["keys"].add_metric([storage, state], count.value)
        families["exact"].add_metric([storage, state], 1 if count.is_exact else 0)
    for name, age in (
        ("oldest_in_flight", census.oldest_in_flight),
        ("oldest_expired", census.oldest_expired),
    ):
        families[name].add_metric([storage], age.total_seconds() if age else 0)


@dataclass(frozen=True)
class Metrics:
    """The metrics ``install()`` registered, and the receiver that feeds them."""

    outcomes: Counter
    store_seconds: Histogram
    registry: CollectorRegistry
    census: CensusCollector | None = None

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


def install(registry: CollectorRegistry = REGISTRY, *, census: bool = True) -> Metrics:
    """Register the metrics in ``registry`` and count every outcome from now on.

    With ``census``, each scrape also reads the configured storage's census (gauges of
    keys by state and the oldest in-flight and expired ages). Once per registry: a second
    call returns the metrics of the first.
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
        census=CensusCollector(configured_storage) if census else None,
    )
    if metrics.census is not None:
        registry.register(metrics.census)
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
    if metrics.census is not None:
        registry.unregister(metrics.census)


def _uid(registry: CollectorRegistry) -> str:
    return f"django_idempotency.metrics:{id(registry)}"


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Serve the default registry in Prometheus's text format, for a project's ``/metrics``.

    Every metric of the process is served, not only this app's. Route it where only your
    Prometheus reaches it (docs/metrics.md); django-prometheus users need no view of ours.
    """
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
