"""The Python x Django matrix that pyproject's classifiers claim, each cell run through dev.py.

``nox -l`` lists the cells; ``nox`` runs them all. Session ``main`` is the README's command,
``python3 dev.py test``, on the main combination (3.11 with the newest Django it resolves,
5.2). Session ``matrix`` is every other cell: ``python3 dev.py test`` with ``--python`` and
``--django``, each in a virtualenv of its own (``.venv-py3.X-djangoX.Y``), with the same two
passes (SQLite, PostgreSQL). The newest cell runs the whole suite too, since the newest Python
and Django are where new warnings appear first; the others run ``SMOKE``, a subset that still
touches every service the suite uses (PostgreSQL, Redis, gunicorn worker processes, the
browser). ``.ci/run`` runs ``main`` as the README's command, then ``nox -s matrix``; coverage
is measured on the main combination only, never in these cells (``--no-coverage``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import nox

nox.options.default_venv_backend = "none"  # dev.py makes and keeps each cell's virtualenv
nox.options.error_on_missing_interpreters = True

#: (Python, Django) cells: Django 5.2 on 3.11-3.13, Django 6.0 and 6.1 on 3.12-3.13.
MATRIX = [
    ("3.11", "5.2"),
    ("3.12", "5.2"),
    ("3.13", "5.2"),
    ("3.12", "6.0"),
    ("3.13", "6.0"),
    ("3.12", "6.1"),
    ("3.13", "6.1"),
]
#: The README's command: ``python3`` (3.11 here) with the newest Django it resolves (5.2).
MAIN = ("3.11", "5.2")
#: Cells that run the whole suite rather than SMOKE: the main one and the newest.
WHOLE_SUITE = {MAIN, MATRIX[-1]}
#: Tests that reach every service: the storage contract on the database and Redis, PostgreSQL's
#: concurrency and clock, live gunicorn workers, the checks, and the admin in a browser.
SMOKE = [
    "tests/test_storage_contract.py",
    "tests/test_store_clock.py",
    "tests/test_atomic_requests.py",
    "tests/test_processes.py",
    "tests/test_checks.py",
    "tests/test_admin_browser.py",
]


def interpreter(version: str) -> str:
    """Return the newest pyenv CPython ``version``.* on this machine, or ``python<version>``."""
    versions = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(
        (tuple(map(int, path.name.split("."))), path / "bin" / "python")
        for path in (versions.glob(f"{version}.*") if versions.is_dir() else [])
        if re.fullmatch(r"\d+\.\d+\.\d+", path.name) and (path / "bin" / "python").exists()
    )
    return str(found[-1][1]) if found else f"python{version}"


@nox.session
def main(session: nox.Session) -> None:
    """Run the README's command: the whole suite on the main combination."""
    session.run("python3", "dev.py", "test", *session.posargs, external=True)


@nox.session
@nox.parametrize(
    ("python_version", "django"),
    [nox.param(*cell, id=f"py{cell[0]}-django{cell[1]}") for cell in MATRIX if cell != MAIN],
)
def matrix(session: nox.Session, python_version: str, django: str) -> None:
    """Run the suite on one other Python and Django: the whole of it, or SMOKE."""
    selection = [] if (python_version, django) in WHOLE_SUITE else SMOKE
    session.run(
        "python3",
        "dev.py",
        "test",
        "--python",
        interpreter(python_version),
        "--django",
        django,
        "--no-coverage",  # coverage is measured on the main combination only
        *selection,
        *session.posargs,
        external=True,
    )
