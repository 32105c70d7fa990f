"""Time the tracing receiver per outcome: without an SDK, and with one recording in memory.

Run from the repository root:

    .venv/bin/python -m bench.tracing [--number 200000]

Beside a receiver that does nothing, the floor of any signal receiver. With
``IDEMPOTENCY_TRACING`` off (the default) no receiver is connected at all.
"""

from __future__ import annotations

import argparse
import os
import timeit
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    number = parser.parse_args().number
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from django_idempotency.outcomes import Outcome
    from django_idempotency.tracing import _Spans

    arguments: dict[str, Any] = {
        "outcome": Outcome.CLAIMED,
        "operation": "claim",
        "store_seconds": 0.001,
        "key": "k",
        "scope": "user:auth.user:1",
        "method": "POST",
        "view": "payments:create",
        "status": None,
        "error": None,
    }

    def bare(sender: Any, **kwargs: Any) -> None:
        return None

    recording = TracerProvider()
    recording.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    for name, receiver, runs in (
        ("a receiver that does nothing", bare, number),
        ("tracing, no SDK configured", _Spans(None).receive, number),
        ("tracing, an SDK recording in memory", _Spans(recording).receive, number // 10),
    ):
        seconds = timeit.timeit(lambda r=receiver: r(None, **arguments), number=runs) / runs
        print(f"{name}: {seconds * 1e6:.2f} us per outcome")


if __name__ == "__main__":
    main()
