"""Redis faults with CacheStorage: what clients see, and when a retry can run the view again.

Run from the repository root, with PostgreSQL reachable and ``redis-server`` on ``PATH``::

    .venv/bin/python -m bench.redis_faults             # 3 rounds
    .venv/bin/python -m bench.redis_faults --rounds 10 --json faults.json
    .venv/bin/python -m bench.redis_faults -k "restarted_empty"   # only the matching tests

Each round runs the live fault tests (``tests/test_redis_faults.py``: a gunicorn with three
sync workers on a private redis-server that the tests pause, resume, kill and restart) and
collects the figures each test measured while it checked its promises. The table shows, per
fault and entry point, what the retries got (in order, repeats counted) and how many seconds
after the fault's end, the owner's claim or the restart a retry ran the view again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.output import write_json

ROOT = Path(__file__).resolve().parent.parent
TEST_FILE = "tests/test_redis_faults.py"
#: The measured delays, each with the column heading it gets.
DELAYS = {
    "rerun_after_resume": "rerun after SIGCONT (s)",
    "rerun_after_claim": "rerun after the claim (s)",
    "rerun_after_restart": "rerun after the restart (s)",
    "during_answered_after": "answered during the fault in (s)",
}
KIND_LABELS = {
    "unavailable": "503",
    "in_progress": "409",
    "replay": "replay",
    "ran": "ran (201)",
    "failed": "ran (500)",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redis_faults", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="runs of the fault tests")
    parser.add_argument("--json", help="also write the raw figures here (- for stdout)")
    parser.add_argument("-k", dest="select", help="run only the tests pytest -k selects")
    args = parser.parse_args(argv)

    figures: list[dict[str, Any]] = []
    failed_rounds = 0
    for round_number in range(1, args.rounds + 1):
        print(f"round {round_number}/{args.rounds} ...", file=sys.stderr, flush=True)
        run, round_figures = run_round(args.select)
        figures += round_figures
        if run.returncode != 0:
            failed_rounds += 1
            print(run.stdout[-4000:], file=sys.stderr)
    print_table(figures, args.rounds)
    write_json({"rounds": args.rounds, "figures": figures}, args.json)
    if failed_rounds:
        print(f"{failed_rounds} round(s) had failing tests; see above.", file=sys.stderr)
        return 1
    return 0


def run_round(select: str | None) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    with tempfile.TemporaryDirectory() as directory:
        target = Path(directory) / "figures.jsonl"
        env = {
            **os.environ,
            "IDEMPOTENCY_TEST_DATABASE": "postgres",
            "IDEMPOTENCY_FAULT_FIGURES": str(target),
            # A test database of its own: a name inherited from a test run (dev.py sets one)
            # would be dropped under that run when this one ends.
            "IDEMPOTENCY_TEST_PG_NAME": f"test_django_idempotency_faults_{os.getpid()}",
        }
        command = [sys.executable, "-m", "pytest", TEST_FILE, "-m", "postgres", "-q"]
        command += ["-p", "no:cacheprovider", *(["-k", select] if select else [])]
        run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        lines = target.read_text().splitlines() if target.exists() else []
    return run, [json.loads(line) for line in lines]


def print_table(figures: list[dict[str, Any]], rounds: int) -> None:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for figure in figures:
        variant = figure.get("owner_finishes", "").replace("_", " ")
        groups[(figure["fault"], variant, figure["entry"])].append(figure)
    print(f"\nRedis faults with CacheStorage, {rounds} round(s), gunicorn with 3 sync workers\n")
    for (fault, variant, entry), runs in groups.items():
        first = runs[0]
        title = f"{fault}" + (f", owner finishes {variant}" if variant else "")
        print(f"## {title} [{entry}]  lease {first['lease']} s", end="")
        if "socket_timeout" in first:
            print(f", socket timeout {first['socket_timeout']} s", end="")
        if "stall_seconds" in first:
            stalls = [run["stall_seconds"] for run in runs]
            print(f", stall {spread(stalls)} s", end="")
        print()
        for field in ("during", "owner", "after"):
            if field in first:
                seen = sorted({describe(run[field]) for run in runs})
                print(f"  {field:<8} {' | '.join(seen)}")
        for field, heading in DELAYS.items():
            values = [value for run in runs if field in run for value in as_list(run[field])]
            if values:
                print(f"  {heading}: {spread(values)}")
        executions = sorted({str(run["executions"]) for run in runs})
        print(f"  executions per key: {' | '.join(executions)}\n")


def describe(answers: str | list[str]) -> str:
    """Say what the clients got in order, a repeated answer once with its count."""
    if isinstance(answers, str):
        answers = [answers]
    parts: list[str] = []
    previous, count = None, 0
    for answer in [*answers, None]:
        if answer == previous:
            count += 1
            continue
        if previous is not None:
            label = KIND_LABELS.get(previous, previous)
            parts.append(label if count == 1 else f"{label} x{count}")
        previous, count = answer, 1
    return ", ".join(parts)


def as_list(value: Any) -> list[float]:
    return [float(item) for item in value] if isinstance(value, list) else [float(value)]


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"median {statistics.median(values):.3f}, {min(values):.3f}-{max(values):.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
