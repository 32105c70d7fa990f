"""Prometheus metrics count the outcomes, in a real prometheus-client registry (docs/metrics.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Error
from prometheus_client import CollectorRegistry, generate_latest

from django_idempotency import checks, metrics
from django_idempotency.storage import Census, DatabaseStorage, StorageUnavailable
from tests.test_behaviour import (  # the matrix's fixtures, shared
    Caller,
    client,  # noqa: F401
    entry_point,  # noqa: F401
    send,
    storage,  # noqa: F401
    url,  # noqa: F401
)

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parent.parent
#: The sample names each metric type exports, for the alert rules' check.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


@pytest.fixture
def registry() -> Iterator[CollectorRegistry]:
    registry = CollectorRegistry()
    metrics.install(registry)
    yield registry
    metrics.uninstall(registry)


def outcomes(registry: CollectorRegistry, outcome: str) -> float:
    """Return the counter's total for ``outcome``, over every method and view."""
    return sum(
        sample.value
        for family in registry.collect()
        if family.name == "django_idempotency_outcomes"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["outcome"] == outcome
    )


def test_outcomes__are_counted_by_outcome_method_and_view(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    registry: CollectorRegistry,
) -> None:
    send(client, url, {"label": "pay"}, key="k")
    send(client, url, {"label": "pay"}, key="k")
    send(client, url, {"label": "other"}, key="k")

    assert outcomes(registry, "claimed") == 1
    assert outcomes(registry, "completed") == 1
    assert outcomes(registry, "replayed") == 1
    assert outcomes(registry, "mismatch") == 1
    family = next(f for f in registry.collect() if f.name == "django_idempotency_outcomes")
    views = {sample.labels["view"] for sample in family.samples}
    # Bounded labels: the view's name, never its path or the key.
    assert all(view.startswith("tests.testapp.views.") for view in views), views
    assert {sample.labels["method"] for sample in family.samples} == {"POST"}


def test_store_calls__are_timed_by_operation(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    registry: CollectorRegistry,
) -> None:
    send(client, url, {"label": "pay"}, key="k")
    send(client, url, {"label": "pay"}, key="k")

    def count(operation: str, outcome: str) -> float | None:
        labels = {"operation": operation, "outcome": outcome}
        return registry.get_sample_value("django_idempotency_store_seconds_count", labels)

    assert count("claim", "claimed") == 1
    assert count("complete", "completed") == 1
    assert count("claim", "replayed") == 1
    total = registry.get_sample_value(
        "django_idempotency_store_seconds_sum", {"operation": "claim", "outcome": "claimed"}
    )
    assert total is not None
    assert total > 0


def test_install__once_per_registry_and_uninstall_stops_counting(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
) -> None:
    registry = CollectorRegistry()
    assert metrics.install(registry) is metrics.install(registry)
    metrics.uninstall(registry)

    send(client, url, {"label": "pay"}, key="k")

    assert list(registry.collect()) == []


def test_census__gauges_of_the_keys_by_state_at_every_scrape(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    storage: str,  # noqa: F811
    registry: CollectorRegistry,
) -> None:
    name = {"database": "DatabaseStorage", "cache": "CacheStorage"}[storage]
    send(client, url, {"label": "pay"}, key="k1")
    send(client, url, {"label": "pay"}, key="k2")

    def gauge(metric: str, **labels: str) -> float | None:
        return registry.get_sample_value(metric, {"storage": name, **labels})

    assert gauge("django_idempotency_census_up") == 1
    assert gauge("django_idempotency_keys", state="completed") == 2
    assert gauge("django_idempotency_keys", state="in_flight") == 0
    assert gauge("django_idempotency_keys_exact", state="completed") == 1
    assert gauge("django_idempotency_oldest_in_flight_seconds") == 0

    send(client, url, {"label": "pay"}, key="k3")

    assert gauge("django_idempotency_keys", state="completed") == 3  # read again, not kept


class Unanswering(DatabaseStorage):
    def census(self) -> Census:
        raise StorageUnavailable("the idempotency database did not answer")


def test_census__a_store_that_does_not_answer_is_census_up_0_and_the_scrape_succeeds() -> None:
    registry = CollectorRegistry()
    registry.register(metrics.CensusCollector(Unanswering))

    exposition = generate_latest(registry).decode()

    assert (
        registry.get_sample_value("django_idempotency_census_up", {"storage": "Unanswering"}) == 0
    )
    assert "django_idempotency_keys{" not in exposition


def test_census__a_misconfigured_storage_exports_no_census(settings: Any) -> None:
    settings.IDEMPOTENCY_STORAGE = "no.such.Storage"
    registry = CollectorRegistry()
    metrics.install(registry)
    try:
        assert registry.get_sample_value("django_idempotency_census_up", {}) is None
        assert generate_latest(registry)  # the other metrics still serve
    finally:
        metrics.uninstall(registry)


def test_census__registering_does_not_query_the_store() -> None:
    asked: list[str] = []

    def asking() -> DatabaseStorage:
        asked.append("storage")
        return DatabaseStorage()

    CollectorRegistry().register(metrics.CensusCollector(asking))

    assert asked == []


def test_install__without_census_exports_no_gauges() -> None:
    registry = CollectorRegistry()
    metrics.install(registry, census=False)
    try:
        assert not [f for f in registry.collect() if f.type == "gauge"]
    finally:
        metrics.uninstall(registry)


_PROBE = """
import json, sys
import tests.settings
tests.settings.IDEMPOTENCY_METRICS = {setting}
import django
django.setup()
from django.core.management import call_command
from django.test import Client
call_command("migrate", verbosity=0)
headers = {{"Idempotency-Key": "k", "Authorization": "Bearer probe"}}
Client().post("/plain/behave/", "{{}}", content_type="application/json", headers=headers)
imported = "prometheus_client" in sys.modules
claimed = None
if imported:
    from prometheus_client import REGISTRY
    labels = {{"outcome": "claimed", "method": "POST", "view": "tests.testapp.views.plain_behave"}}
    claimed = REGISTRY.get_sample_value("django_idempotency_outcomes_total", labels)
print(json.dumps({{"imported": imported, "claimed": claimed}}))
"""


def _probe(metrics_setting: bool) -> dict[str, object]:
    """Start a project on the test settings, send one keyed request, say what it counted."""
    run = subprocess.run(
        [sys.executable, "-c", _PROBE.format(setting=metrics_setting)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "IDEMPOTENCY_TEST_DATABASE": "sqlite",
            "IDEMPOTENCY_TEST_SQLITE_NAME": ":memory:",
        },
    )
    assert run.returncode == 0, run.stderr
    result: dict[str, object] = json.loads(run.stdout.strip().splitlines()[-1])
    return result


def test_setting_off__nothing_imports_prometheus_client() -> None:
    assert _probe(metrics_setting=False) == {"imported": False, "claimed": None}


def test_setting_on__the_default_registry_counts_from_startup() -> None:
    assert _probe(metrics_setting=True) == {"imported": True, "claimed": 1.0}


def test_check__refuses_metrics_without_prometheus_client(
    settings: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.IDEMPOTENCY_METRICS = True  # type: ignore[attr-defined]
    monkeypatch.setattr(checks, "_has_module", lambda name: name != "prometheus_client")

    messages = checks.check_integrations(None)

    assert [(type(m), m.id) for m in messages] == [(Error, "django_idempotency.E005")]


def test_example_alerts__use_only_the_metrics_this_package_exports(
    registry: CollectorRegistry,
) -> None:
    import re

    import yaml

    rules = yaml.safe_load((ROOT / "docs/examples/prometheus-alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for expr in exprs for name in re.findall(r"django_idempotency_\w+", expr)}
    exported = {
        f"{family.name}{suffix}"
        for family in registry.collect()
        for suffix in SUFFIXES[family.type]
    }
    assert used
    assert used <= exported, used - exported


def test_metrics_view__serves_the_default_registry_as_prometheus_text() -> None:
    from django.test import RequestFactory

    response = metrics.metrics_view(RequestFactory().get("/metrics/"))

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert b"# HELP" in response.content


def test_uninstall__of_a_registry_never_installed_does_nothing() -> None:
    metrics.uninstall(CollectorRegistry())  # no error, nothing to unregister
