"""Set up a development environment and run the demo or the test suite.

    python3 dev.py demo                 # run the example project's demo
    python3 dev.py lint                 # ruff check, ruff format --check, mypy --strict
    python3 dev.py test [pytest args]   # run the whole test suite (SQLite, PostgreSQL, MariaDB)
    python3 dev.py test --require-services   # fail instead of skipping (CI=true does the same)
    python3 dev.py test --coverage      # measure branch coverage of every pass (CI=true does too)
    python3 dev.py test --python PATH   # the same on another interpreter, in .venv-py3.X
    python3 dev.py test --django 5.2    # the same on a Django release series, in .venv-django5.2

Standard library only, so it runs on a fresh machine with Python 3.11+. It creates ``.venv``
(or ``.venv-py3.X`` for ``--python``), installs the project with every extra and the ``dev``
dependency group (``-e ".[drf,...]" --group dev``) into it whenever
``pyproject.toml`` changed since the last install, then runs itself again with the virtualenv's
Python to do the real work. A new virtualenv gets the newest Django that pip resolves for its
Python (Django 6 needs Python 3.12 or newer); remove it to test a newer release.

The passes: SQLite; PostgreSQL (every test); MariaDB (DatabaseStorage's tests, the
concurrency proofs included). A server that does not answer skips its pass with a note, or
fails the run where services are required (CI).

With ``--coverage`` (or ``CI=true`` on the whole suite, unless ``--no-coverage``) every pass
runs under coverage.py as ``[tool.coverage.*]`` in pyproject.toml configures it, the Python
processes the tests start included; after the last pass the data is combined, the report
printed, and the command fails when the whole suite's coverage is under ``fail_under``.

With ``DEV_PY_LEDGER=FILE`` each test run also appends its counts to FILE and, after the
second run, ends with the total over all the runs recorded there (``.ci/run`` uses it).

This module is also the tiny pytest plugin (``-p dev``) that counts outcomes for each pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP_NAME = ".dev-py-pyproject.sha256"
IN_VENV_MARKER = "DEV_PY_IN_VENV"  # the virtualenv the child must run in
REPORT_ENV = "DEV_PY_REPORT"
LEDGER_ENV = "DEV_PY_LEDGER"
#: The ``[dependency-groups]`` group of development tools, and the pip that can install one.
DEV_GROUP = "dev"
PIP_WITH_GROUPS = "pip>=25.1"

SQLITE_MARKS = "not postgres and not server_db and not redis and not browser"
FALLBACK_MARKS = "(redis or browser) and not postgres and not server_db"
#: The MariaDB pass: every test of DatabaseStorage that is not PostgreSQL's own; Redis and
#: the browser were the other passes'.
MARIADB_MARKS = "not postgres and not redis and not browser"

USAGE = """usage: python3 dev.py demo [--python PATH] [--django X.Y] [demo args]
       python3 dev.py lint [--python PATH] [--django X.Y]
       python3 dev.py test [--python PATH] [--django X.Y] [--require-services]
                       [--coverage | --no-coverage] [pytest args]"""


# --- bootstrap (system Python) ----------------------------------------------------------------


class SetupError(Exception):
    """A virtualenv could not be prepared; the message says why and what to do."""


def venv_python(venv: Path) -> Path:
    """Return the path of a virtualenv's interpreter."""
    if os.name == "nt":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def is_running_in(venv: Path) -> bool:
    """Say whether this process already runs on the given virtualenv."""
    return Path(sys.prefix).resolve() == venv.resolve()


def take_option(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """Return the value of ``name VALUE`` in ``args`` (None if absent) and the other arguments."""
    if name not in args:
        return None, args
    at = args.index(name)
    if at + 1 == len(args):
        raise SetupError(f"{name} needs a value")
    return args[at + 1], args[:at] + args[at + 2 :]


def choose_venv(args: list[str]) -> tuple[Path, str, str | None, list[str]]:
    """Return the virtualenv, the Python that creates it, its Django series, and the other args.

    ``--python PATH`` picks ``.venv-py3.X`` for that interpreter; otherwise ``.venv`` is made
    with the Python running this script. ``--django X.Y`` pins that release series (the newest
    X.Y.* pip finds) in a virtualenv of its own, named with a ``-djangoX.Y`` suffix.
    """
    django, args = take_option(args, "--django")
    if django is not None and not all(part.isdigit() for part in django.split(".")):
        raise SetupError(f"--django takes a release series such as 5.2, not {django!r}")
    suffix = f"-django{django}" if django else ""
    if "--python" not in args:
        venv = ROOT / f".venv{suffix}" if suffix else VENV
        return venv, sys.executable, django, args
    at = args.index("--python")
    if at + 1 == len(args):
        raise SetupError("--python needs the path of a Python interpreter")
    base, rest = args[at + 1], args[:at] + args[at + 2 :]
    try:
        probe = subprocess.run(
            [base, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        major, minor = map(int, probe.stdout.split())
    except (OSError, ValueError):
        raise SetupError(f"{base} did not run as a Python interpreter") from None
    if (major, minor) < (3, 11):
        raise SetupError(f"{base} is Python {major}.{minor}; the project needs 3.11 or newer")
    return ROOT / f".venv-py{major}.{minor}{suffix}", base, django, rest


def pyproject_hash() -> str:
    """Hash pyproject.toml, so a changed dependency list triggers a reinstall."""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv(venv: Path, base_python: str, django: str | None = None) -> Path:
    """Create the virtualenv if missing and install the project into it when needed."""
    python = venv_python(venv)
    name = venv.relative_to(ROOT)
    if not python.exists():
        print(f"dev.py: creating {name} with {base_python}", flush=True)
        result = subprocess.run([base_python, "-m", "venv", str(venv)], check=False)
        if result.returncode != 0 or not python.exists():
            raise SetupError(
                "could not create the virtualenv. On Debian/Ubuntu install the "
                "python3-venv package, then run this command again."
            )
    stamp = venv / STAMP_NAME
    pinned = [f"django~={django}.0"] if django else []
    wanted = " ".join([pyproject_hash(), *pinned])
    installed = stamp.read_text().strip() if stamp.exists() else ""
    if installed != wanted:
        project = f".[{','.join(extras())}]"
        what = " ".join([f'-e "{project}"', "--group", DEV_GROUP, *pinned])
        print(f"dev.py: installing {what} into {name} (first run takes a minute)", flush=True)
        for step in (
            ["install", "--quiet", "--upgrade", PIP_WITH_GROUPS],
            ["install", "--quiet", "-e", project, "--group", DEV_GROUP, *pinned],
        ):
            result = subprocess.run([str(python), "-m", "pip", *step], cwd=ROOT, check=False)
            if result.returncode != 0:
                raise SetupError("pip install failed; see the output above.")
        stamp.write_text(wanted + "\n")
    return python


def extras() -> list[str]:
    """Return every extra that pyproject.toml declares: the suite tests them all."""
    import tomllib  # here: an old python3 must reach bootstrap()'s version message first

    with (ROOT / "pyproject.toml").open("rb") as file:
        return sorted(tomllib.load(file)["project"]["optional-dependencies"])


def bootstrap(command: str, args: list[str]) -> int:
    """Prepare the virtualenv and run this script again inside it."""
    if sys.version_info < (3, 11):  # noqa: UP036  (dev.py may be started by an old python3)
        sys.exit(f"dev.py: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    try:
        venv, base_python, django, venv_args = choose_venv(args)
        python = ensure_venv(venv, base_python, django)
    except SetupError as exc:
        print(f"dev.py: {exc}", file=sys.stderr, flush=True)
        if command == "test":
            # A run that could not start counts as one failure, so a ledger's total shows it.
            record_run(" ".join(["dev.py", command, *args]), Counts(failed=1), ok=False)
        return 1
    env = {**os.environ, IN_VENV_MARKER: str(venv)}
    command_line = [str(python), str(ROOT / "dev.py"), command, *venv_args]
    return subprocess.call(command_line, cwd=ROOT, env=env)


# --- demo -------------------------------------------------------------------------------------


def run_demo(args: list[str]) -> int:
    """Migrate the example project's database, then run its demo."""
    manage = [sys.executable, str(ROOT / "manage.py")]
    migrate = subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, check=False)
    if migrate.returncode != 0:
        return migrate.returncode
    return subprocess.call([*manage, "demo", *args], cwd=ROOT)


# --- lint -------------------------------------------------------------------------------------

#: The house's gates, each as pyproject.toml configures it; every one runs, then all must pass.
LINTERS = (
    ("ruff check", ["-m", "ruff", "check", "."]),
    ("ruff format --check", ["-m", "ruff", "format", "--check", "."]),  # docs' code blocks too
    ("mypy --strict", ["-m", "mypy"]),  # [tool.mypy]: strict, the package and the tests
)


def run_lint(args: list[str]) -> int:
    """Run every linter; return non-zero when any fails."""
    if args:
        print(USAGE, file=sys.stderr)
        return 2
    failed = []
    for name, command in LINTERS:
        print(f"=== {name} ===", flush=True)
        if subprocess.call([sys.executable, *command], cwd=ROOT) != 0:
            failed.append(name)
    print(f"=== dev.py lint: {'FAILED: ' + ', '.join(failed) if failed else 'ok'} ===", flush=True)
    return 1 if failed else 0


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

    def line(self) -> str:
        state = "ok" if self.ok else f"FAILED (exit code {self.exit_code})"
        return f"{self.name}: {self.counts.summary()}: {state}"


def print_summary(title: str, results: list[PassResult], notes: list[str], total: Counts) -> None:
    """Print each result, the notes, and last the plain ``N passed, N failed, N skipped``."""
    print(f"\n=== {title} ===")
    for result in results:
        print(result.line())
    for note in notes:
        print(note)
    print(total.summary(), flush=True)


def record_run(name: str, counts: Counts, ok: bool) -> None:
    """With DEV_PY_LEDGER, add this run to the ledger; from the second run on, print the total."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    ledger = Path(path)
    with ledger.open("a") as out:
        out.write(json.dumps({"name": name, "exit_code": 0 if ok else 1, **asdict(counts)}) + "\n")
    runs = []
    for line in ledger.read_text().splitlines():
        run = json.loads(line)
        runs.append(PassResult(run.pop("name"), run.pop("exit_code"), Counts(**run)))
    if len(runs) > 1:
        total = sum((run.counts for run in runs), Counts())
        print_summary(f"all runs in {LEDGER_ENV}", runs, [], total)


def has_selection(args: list[str]) -> bool:
    """Say whether pytest arguments select tests by marker or keyword."""
    return any(a in ("-m", "-k") or a.startswith(("-m", "-k")) for a in args)


def run_pytest(
    name: str, database: str, args: list[str], env: dict[str, str], *, coverage: bool = False
) -> PassResult:
    """Run one pytest pass (under coverage.py if asked) and read its counts from the plugin."""
    print(f"\n=== {name} ===", flush=True)
    with tempfile.TemporaryDirectory(prefix="dev-py-") as tmp:
        report = Path(tmp) / "report.json"
        pass_env = {**env, "IDEMPOTENCY_TEST_DATABASE": database, REPORT_ENV: str(report)}
        runner = ["-m", "coverage", "run"] if coverage else []
        command = [sys.executable, *runner, "-m", "pytest", "-p", "dev", *args]
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
            [*command, *args, "-m", "postgres or server_db"],
            cwd=ROOT,
            env=pass_env,
            stdout=subprocess.DEVNULL,
            check=False,
        )
        if not report.exists():
            return 0
        return int(json.loads(report.read_text())["collected"])


def mariadb_problem() -> tuple[str, str | None]:
    """Return where MariaDB is expected, and why it cannot be used (None when it can)."""
    host = os.environ.get("MYSQL_HOST", "127.0.0.1")
    port = os.environ.get("MYSQL_PORT", "3306")
    where = f"{host}:{port}"
    try:
        import pymysql
    except ImportError as exc:
        return where, f"PyMySQL is not installed ({exc})"
    try:
        pymysql.connect(
            host=host,
            port=int(port),
            user=os.environ.get("MYSQL_USER", "root"),
            password=os.environ.get("MYSQL_PASSWORD", ""),
            connect_timeout=3,
        ).close()
    except pymysql.Error as exc:
        return where, str(exc) or type(exc).__name__
    return where, None


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


#: Where the coverage data goes: one file per process while the passes run, then combined.
COVERAGE_FILE = ROOT / ".coverage"


def erase_coverage() -> None:
    """Remove the data of an earlier measurement, so this one starts from nothing."""
    subprocess.run([sys.executable, "-m", "coverage", "erase"], cwd=ROOT, check=False)


def report_coverage(*, whole_suite: bool) -> str | None:
    """Combine the passes' data and print the report; return why it fails, or None.

    A selection of tests is reported but not held to ``fail_under``.
    """
    print("\n=== coverage ===", flush=True)
    coverage = [sys.executable, "-m", "coverage"]
    if subprocess.call([*coverage, "combine", "--quiet"], cwd=ROOT) != 0:
        return "coverage: no data to combine: FAILED"
    threshold = [] if whole_suite else ["--fail-under=0"]
    status = subprocess.call([*coverage, "report", *threshold], cwd=ROOT)
    if status == 2:  # coverage.py's exit status for "under fail_under"
        return "coverage: under fail_under in pyproject.toml: FAILED"
    if status != 0:
        return f"coverage: report failed (exit code {status}): FAILED"
    return None


def is_truthy(value: str | None) -> bool:
    """Read an environment flag such as ``CI=true``."""
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def run_tests(args: list[str]) -> int:
    """Run the suite in passes (SQLite, PostgreSQL, MariaDB) and print one summary line."""
    flags = {"--require-services", "--coverage", "--no-coverage"}
    given, args = {a for a in args if a in flags}, [a for a in args if a not in flags]
    in_ci = is_truthy(os.environ.get("CI"))
    require = (
        "--require-services" in given
        or in_ci
        or os.environ.get("IDEMPOTENCY_REQUIRE_SERVICES") == "1"
    )
    # CI measures the whole suite; a selection (any pytest argument) is measured when asked.
    coverage = "--no-coverage" not in given and ("--coverage" in given or (in_ci and not args))
    import django  # the virtualenv has it; bootstrap()'s Python may not

    name = f"Python {platform.python_version()}, Django {django.get_version()}"
    print(f"dev.py: {name} ({Path(sys.prefix).name})", flush=True)
    env = dict(os.environ)
    env.pop(IN_VENV_MARKER, None)
    # One test database per checkout, so two clones testing on one server do not collide.
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:8]
    env.setdefault("IDEMPOTENCY_TEST_PG_NAME", f"test_django_idempotency_{checkout}")
    env.setdefault("IDEMPOTENCY_TEST_MARIADB_NAME", f"test_django_idempotency_{checkout}")
    if require:
        env["IDEMPOTENCY_REQUIRE_SERVICES"] = "1"
        print("dev.py: services are required (CI or --require-services): nothing may skip")
    if coverage:
        env["COVERAGE_FILE"] = str(COVERAGE_FILE)  # the same file for processes started elsewhere
        erase_coverage()
        print("dev.py: measuring coverage ([tool.coverage] in pyproject.toml)", flush=True)

    sqlite_args = ["-m", SQLITE_MARKS, *args]
    passes = [run_pytest("pass 1: SQLite", "sqlite", sqlite_args, env, coverage=coverage)]
    notes: list[str] = []
    extra = Counts()

    where, problem = postgres_problem()
    if problem is None:
        passes.append(
            run_pytest("pass 2: PostgreSQL (all tests)", "postgres", args, env, coverage=coverage)
        )
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
                coverage=coverage,
            )
        )

    where, problem = mariadb_problem()
    if problem is None:
        mariadb_args = ["-m", MARIADB_MARKS, *args]
        passes.append(
            run_pytest("pass 3: MariaDB", "mariadb", mariadb_args, env, coverage=coverage)
        )
    elif require:
        notes.append(
            f"MariaDB not reachable at {where} ({problem}), and services are required: FAILED"
        )
        extra.failed += 1
    else:
        notes.append(f"MariaDB not reachable at {where} ({problem}): no MariaDB pass")
    if problem is not None:
        print(f"\ndev.py: {notes[-1]}", flush=True)

    total = sum((p.counts for p in passes), extra)
    failed = any(not p.ok for p in passes) or extra.failed > 0
    if coverage:
        shortfall = report_coverage(whole_suite=not args)
        if shortfall is not None:
            notes.append(shortfall)
            failed = True
    if total.total == 0:
        notes.append("no tests ran at all: FAILED")
        failed = True
    print_summary("dev.py summary", passes, notes, total)
    record_run(name, total, ok=not failed)
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
    """Dispatch ``demo``, ``lint`` or ``test``."""
    if not argv or argv[0] not in ("demo", "lint", "test"):
        print(USAGE, file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, args = argv[0], argv[1:]
    wanted = os.environ.get(IN_VENV_MARKER)
    if wanted:  # started by bootstrap(): it must have started the virtualenv it prepared
        if not is_running_in(Path(wanted)):
            sys.exit(f"dev.py: {sys.executable} is not the virtualenv at {wanted}; remove it")
    elif "--python" in args or "--django" in args or not is_running_in(VENV):
        return bootstrap(command, args)
    if command == "demo":
        return run_demo(args)
    if command == "lint":
        return run_lint(args)
    return run_tests(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
