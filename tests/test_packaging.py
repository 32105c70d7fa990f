"""The package as installed: migrations complete, and a wheel with what it needs."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.django_db
def test_migrations__none_missing() -> None:
    out = StringIO()

    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=StringIO())

    assert "No changes detected" in out.getvalue()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("django_idempotency-*.whl")
    return zipfile.ZipFile(path)


def test_wheel__contains_migrations_and_py_typed(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())

    assert "django_idempotency/py.typed" in names
    assert "django_idempotency/migrations/0001_initial.py" in names
    assert "django_idempotency/migrations/__init__.py" in names
    assert "django_idempotency/management/commands/purge_idempotency_keys.py" in names


def test_wheel__contains_nothing_from_tests_or_the_example(wheel: zipfile.ZipFile) -> None:
    top_level = {name.split("/")[0] for name in wheel.namelist()}

    assert top_level == {"django_idempotency", *{n for n in top_level if n.endswith(".dist-info")}}
