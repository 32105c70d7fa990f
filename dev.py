"""Set up a development environment and run the demo or the test suite.

    python3 dev.py demo                 # run the example project's demo
    python3 dev.py test [pytest args]   # run the whole test suite (SQLite, then PostgreSQL)
    python3 dev.py test --require-services   # fail instead of skipping (CI=true does the same)

Standard library only, so it runs on a fresh machine with Python 3.11+. It creates ``.venv``,
installs ``-e ".[dev]"`` into it whenever ``pyproject.toml`` changed since the last install,
then runs itself again with the virtualenv's Python to do the real work.

This module is also the tiny pytest plugin (``-p dev``) that counts outcomes for each pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dev-py-pyproject.sha256"
IN_VENV_MARKER = "DEV_PY_IN_VENV"
REPORT_ENV = "DEV_PY_REPORT"

SQLITE_MARKS = "not postgres and not redis and not browser"
FALLBACK_MARKS = "(redis or browser) and not postgres"

USAGE = """usage: python3 dev.py demo [demo args]
       python3 dev.py test [--require-services] [pytest args]"""


# --- bootstrap (system Python) ----------------------------------------------------------------


def venv_python() -> Path:
    """Return the path of the virtualenv's interpreter."""
    if os.name == "nt":
        return VENV / "Scripts" / "python.exe"
    return VENV / "bin" / "python"


def is_running_in_venv() -> bool:
    """Say whether this process already runs on the project's virtualenv."""
    return Path(sys.prefix).resolve() == VENV.resolve()


def pyproject_hash() -> str:
    """Hash pyproject.toml, so a changed dependency list triggers a reinstall."""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> Path:
    """Create ``.venv`` if missing and install the project into it when needed."""
    python = venv_python()
    if not python.exists():
        print(f"dev.py: creating {VENV.relative_to(ROOT)} with {sys.executable}", flush=True)
        result = subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=False)
        if result.returncode != 0 or not python.exists():
            sys.exit(
                "dev.py: could not create the virtualenv. On Debian/Ubuntu install the "
                "python3-venv package, then run this command again."
            )
    wanted = pyproject_hash()
    installed = STAMP.read_text().strip() if STAMP.exists() else ""
    if installed != wanted:
        print('dev.py: installing -e ".[dev]" into .venv (first run takes a minute)', flush=True)
        result = subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-e", ".[dev]"],
            cwd=ROOT,
            check=False,
        )
        if result.returncode != 0:
            sys.exit("dev.py: pip install failed; see the output above.")
        STAMP.write_text(wanted + "\n")
    return python


def bootstrap(argv: list[str]) -> int:
    """Prepare the virtualenv and run this script again inside it."""
    if sys.version_info < (3, 11):  # noqa: UP036  (dev.py may be started by an old python3)
        sys.exit(f"dev.py: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    if os.environ.get(IN_VENV_MARKER):
        sys.exit(f"dev.py: {venv_python()} is not the virtualenv at {VENV}; remove .venv and retry")
    python = ensure_venv()
    env = {**os.environ, IN_VENV_MARKER: "1"}
    return subprocess.call([str(python), str(ROOT / "dev.py"), *argv], cwd=ROOT, env=env)


# --- demo -------------------------------------------------------------------------------------


def run_demo(args: list[str]) -> int:
    """Migrate the example project's database, then run its demo."""
    manage = [sys.executable, str(ROOT / "manage.py")]
    migrate = subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=False)
    if migrate.returncode != 0:
        return migrate.returncode
    return subprocess.call([*manage, "demo", *args], cwd=ROOT)


# --- test -------------------------------------------------------------------------------------


@dataclass
class Counts:
    """Outcome counts of one pytest pass, as reported by the plugin below."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    collected: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.skipped

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.passed + other.passed,
            self.failed + other.failed,
            self.skipped + other.skipped,
            self.collected + other.collected,
        )

    def summary(self) -> str:
        return f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped"


@dataclass
class PassResult:
    """One pytest pass: its name, exit code and counts."""

    name: str
    exit_code: int
    counts: Counts = field(default_factory=Counts)
    selected: bool = False

    @property
    def ok(self) -> bool:
        # pytest exit 5 = "no tests collected": fine when a -m/-k selection left nothing here.
        return self.exit_code == 0 or (self.exit_code == 5 and self.selected)


def has_selection(args: list[str]) -> bool:
    """Say whether pytest arguments select tests by marker or keyword."""
    return any(a in ("-m", "-k") or a.startswith(("-m", "-k")) for a in args)


def run_pytest(name: str, database: str, args: list[str], env: dict[str, str]) -> PassResult:
    """Run one pytest pass and read its counts from the plugin's report file."""
    print(f"\n=== {name} ===", flush=True)
    with tempfile.TemporaryDirectory(prefix="dev-py-") as tmp:
        report = Path(tmp) / "report.json"
        pass_env = {**env, "IDEMPOTENCY_TEST_DATABASE": database, REPORT_ENV: str(report)}
        command = [sys.executable, "-m", "pytest", "-p", "dev", *args]
        exit_code = subprocess.call(command, cwd=ROOT, env=pass_env)
        result = PassResult(name, exit_code, selected=has_selection(args))
        if report.exists():
            result.counts = Counts(**json.loads(report.read_text()))
        elif exit_code not in (0, 5):
            print(f"dev.py: pytest stopped before reporting (exit code {exit_code})", flush=True)
    return result


def count_postgres_tests(args: list[str], env: dict[str, str]) -> int:
    """Collect (without running) the tests marked ``postgres`` and return how many there are."""
    with tempfile.TemporaryDirectory(prefix="dev-py-") as tmp:
        report = Path(tmp) / "report.json"
        pass_env = {**env, "IDEMPOTENCY_TEST_DATABASE": "sqlite", REPORT_ENV: str(report)}
        command = [sys.executable, "-m", "pytest", "-p", "dev", "--collect-only", "-qq"]
        subprocess.run(
            [*command, *args, "-m", "postgres"],
            cwd=ROOT,
            env=pass_env,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        if not report.exists():
            return 0
        return int(json.loads(report.read_text())["collected"])


def postgres_problem() -> tuple[str, str | None]:
    """Return where PostgreSQL is expected, and why it cannot be used (None when it can)."""
    host = os.environ.get("PGHOST", "127.0.0.1")
    port = os.environ.get("PGPORT", "5432")
    where = f"{host}:{port}"
    try:
        import psycopg
    except ImportError as exc:
        return where, f"psycopg is not installed ({exc})"
    try:
        with psycopg.connect(
            host=host,
            port=port,
            dbname="postgres",
            user=os.environ.get("PGUSER", "postgres"),
            password=os.environ.get("PGPASSWORD", ""),
            connect_timeout=3,
        ):
            pass
    except psycopg.Error as exc:
        return where, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return where, None


def is_truthy(value: str | None) -> bool:
    """Read an environment flag such as ``CI=true``."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def run_tests(args: list[str]) -> int:
    """Run the suite in two passes (SQLite, PostgreSQL) and print one summary line."""
    require = "--require-services" in args
    args = [a for a in args if a != "--require-services"]
    require = (
        require
        or is_truthy(os.environ.get("CI"))
        or os.environ.get("IDEMPOTENCY_REQUIRE_SERVICES") == "1"
    )
    env = dict(os.environ)
    env.pop(IN_VENV_MARKER, None)
    # One test database per checkout, so two clones testing on one server do not collide.
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
    env.setdefault("IDEMPOTENCY_TEST_PG_NAME", f"test_django_idempotency_{checkout}")
    if require:
        env["IDEMPOTENCY_REQUIRE_SERVICES"] = "1"
        print("dev.py: services are required (CI or --require-services): nothing may skip")

    passes = [run_pytest("pass 1: SQLite", "sqlite", ["-m", SQLITE_MARKS, *args], env)]
    notes: list[str] = []
    extra = Counts()

    where, problem = postgres_problem()
    if problem is None:
        passes.append(run_pytest("pass 2: PostgreSQL (all tests)", "postgres", args, env))
    else:
        missing = count_postgres_tests(args, env)
        if require:
            notes.append(
                f"PostgreSQL not reachable at {where} ({problem}): "
                f"{missing} PostgreSQL tests could not run, and services are required: FAILED"
            )
            extra.failed += max(missing, 1)
        else:
            notes.append(
                f"PostgreSQL not reachable at {where} ({problem}): "
                f"skipped {missing} PostgreSQL tests"
            )
            extra.skipped += missing
        print(f"\ndev.py: {notes[-1]}", flush=True)
        passes.append(
            run_pytest(
                "pass 2: Redis and browser tests on SQLite (no PostgreSQL)",
                "sqlite",
                ["-m", FALLBACK_MARKS, *args],
                env,
            )
        )

    total = sum((p.counts for p in passes), extra)
    print("\n=== dev.py summary ===")
    for p in passes:
        state = "ok" if p.ok else f"FAILED (pytest exit code {p.exit_code})"
        print(f"{p.name}: {p.counts.summary()}: {state}")
    for note in notes:
        print(note)
    failed = any(not p.ok for p in passes) or extra.failed > 0
    if total.total == 0:
        print("no tests ran at all: FAILED")
        failed = True
    print(total.summary(), flush=True)
    return 1 if failed else 0


# --- pytest plugin (loaded with ``-p dev`` inside each pass) ----------------------------------

_counts: dict[str, int] = {"passed": 0, "failed": 0, "skipped": 0, "collected": 0}


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Count collection errors as failures and module-level skips as skips."""
    if report.failed:
        _counts["failed"] += 1
    elif report.skipped:
        _counts["skipped"] += 1


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember how many tests were selected."""
    _counts["collected"] = len(session.items)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count each test once by outcome; setup/teardown errors count as failures."""
    if report.failed:
        _counts["failed"] += 1
    elif report.skipped:
        _counts["skipped"] += 1  # includes expected failures (xfail)
    elif report.when == "call":
        _counts["passed"] += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the counts where dev.py asked for them."""
    path = os.environ.get(REPORT_ENV)
    if path:
        Path(path).write_text(json.dumps(_counts))


# --- entry point ------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Dispatch ``demo`` or ``test``."""
    if not argv or argv[0] not in ("demo", "test"):
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if not is_running_in_venv():
        return bootstrap(argv)
    if argv[0] == "demo":
        return run_demo(argv[1:])
    return run_tests(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
