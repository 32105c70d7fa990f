"""The request benchmark runs end to end (a smoke test: it asserts what it prints, never speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_requests__prints_every_variant_with_its_cpu_time_and_profile(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench.requests", "-n", "5", "--warmup", "1"]
    command += ["--databases", "sqlite", "--no-redis", "--profile", "3", "--json", str(results)]

    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert run.returncode == 0, run.stderr
    rows = json.loads(results.read_text())["databases"]["sqlite"]["variants"]
    assert set(rows) == {
        "drf.bare",
        "drf.bare.atomic",
        "drf.mixin.first",
        "drf.mixin.replay",
        "plain.bare",
        "plain.middleware.nokey",
        "plain.middleware.first",
        "plain.middleware.replay",
    }
    # A first request through DatabaseStorage sends the claim, the view's write and the
    # completion; a replay only reads.
    assert rows["drf.mixin.first"]["queries"] > rows["drf.mixin.replay"]["queries"] == 1
    for row in rows.values():
        assert row["cpu_median_ms"] > 0
        assert row["ratio_median"] > 0
    assert "DRF + mixin, first request" in run.stdout
    assert "profiled ms per request by package" in run.stdout
    assert "django_idempotency" in run.stdout
    assert "against the bare view in a transaction" in run.stdout
