"""The README's demo: the example project runs and its transcript's expectations hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import is_postgres

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Point the example project at a database of its own, of the pass's kind."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if not is_postgres():
        env["EXAMPLE_SQLITE_PATH"] = str(tmp_path / "example.sqlite3")
        yield env
        return
    import psycopg

    name = f"idempotency_example_{uuid.uuid4().hex[:12]}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{name}"')
    env.update(EXAMPLE_DATABASE="postgres", EXAMPLE_PGDATABASE=name)
    try:
        yield env
    finally:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_demo__runs_the_example_api_and_every_expectation_holds(
    example_env: dict[str, str],
) -> None:
    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=example_env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    migrated = manage("migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    demo = manage("demo")

    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Idempotent-Replayed: true" in demo.stdout
    assert "422" in demo.stdout
    assert "payments the event recorded: 1" in demo.stdout


def test_the_example_projects_own_tests__pass_with_the_kit(example_env: dict[str, str]) -> None:
    # example_project/tests uses django_idempotency.testing and its pytest plugin; on the
    # PostgreSQL pass its concurrent-duplicates test runs too.
    tests = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "example_project"),
            *("--ds=example_project.settings", "-p", "no:cacheprovider", "-q", "-rs"),
        ],
        cwd=ROOT,
        env=example_env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert tests.returncode == 0, tests.stdout + tests.stderr
    summary = tests.stdout.strip().splitlines()[-1]
    assert summary.startswith("10 passed" if is_postgres() else "9 passed, 1 skipped"), summary


def test_schema__documents_the_key_on_the_orders_api(
    example_env: dict[str, str], tmp_path: Path
) -> None:
    schema_file = tmp_path / "schema.json"
    options = ["--validate", "--fail-on-warn", "--format", "openapi-json", "--file", schema_file]
    generated = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "spectacular", *map(str, options)],
        env=example_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert generated.returncode == 0, generated.stdout + generated.stderr
    operations = json.loads(schema_file.read_text())["paths"]
    create = operations["/api/orders/"]["post"]
    assert {"name": "Idempotency-Key", "in": "header", "required": True}.items() <= next(
        p for p in create["parameters"] if p["name"] == "Idempotency-Key"
    ).items()
    assert {"400", "409", "422"} <= set(create["responses"])
    assert "parameters" not in operations["/api/orders/"]["get"] or all(
        p["name"] != "Idempotency-Key" for p in operations["/api/orders/"]["get"]["parameters"]
    )
