"""The request benchmark runs end to end (a smoke test: it asserts what it prints, never speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

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


@pytest.mark.postgres
def test_bench_requests__prints_the_database_floor_under_the_ratios(tmp_path: Path) -> None:
    results = tmp_path / "results.json"
    command = [sys.executable, "-m", "bench.requests", "-n", "5", "--warmup", "1"]
    command += ["--databases", "postgres", "--no-redis", "--json", str(results)]
    # Its own database: another test run on this server may be benchmarking too.
    env = {**os.environ, "BENCH_PG_NAME": f"idempotency_bench_{uuid.uuid4().hex[:12]}"}

    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    assert run.returncode == 0, run.stderr
    floor = json.loads(results.read_text())["databases"]["postgres"]["floor_ms"]
    assert set(floor) == {"bare", "first", "replay"}
    # A first request's sequence holds the bare one's INSERT and three round trips more.
    assert floor["first"] > floor["bare"] > 0
    assert floor["replay"] > 0
    assert "database floor (bench/floor.py" in run.stdout
    assert "so no first request can be faster than" in run.stdout
