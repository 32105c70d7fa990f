"""The Redis fault benchmark runs end to end (a smoke test: it checks what it prints)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
@pytest.mark.redis
def test_bench_redis_faults__prints_the_window_of_the_tests_it_ran(tmp_path: Path) -> None:
    results = tmp_path / "faults.json"
    command = [sys.executable, "-m", "bench.redis_faults", "--rounds", "1", "--json", str(results)]
    command += ["-k", "restarted_empty and plain"]

    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    assert run.returncode == 0, run.stdout + run.stderr
    figures = json.loads(results.read_text())["figures"]
    assert [figure["fault"] for figure in figures] == ["restart without persistence"]
    assert figures[0]["executions"] == [2, 2]
    assert "## restart without persistence [plain]" in run.stdout
    assert "rerun after the restart (s)" in run.stdout
