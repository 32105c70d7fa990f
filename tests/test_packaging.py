"""The package as distributed: its metadata, a wheel with what it needs, a complete sdist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from packaging.version import Version

from django_idempotency import exceptions

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())
# What the sdist must carry besides the package: everything its own tests and docs build need.
SDIST_TREES = ("tests", "example_project", "bench", "docs")
SDIST_FILES = (
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "SECURITY.md",
    "pyproject.toml",
    "MANIFEST.in",
    "dev.py",
    "manage.py",
    "mkdocs.yml",
    ".readthedocs.yaml",
)
# Quick SQLite-only tests run from the unpacked sdist: the core behaviour and the migrations.
SDIST_TESTS = ("tests/test_behaviour.py", "tests/test_packaging.py::test_migrations__none_missing")


# What a fresh clone does not have: build output (a stale *.egg-info/SOURCES.txt would add
# its files to the next sdist and hide a gap in MANIFEST.in), virtualenvs, caches.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv*", "*.egg-info", "build", "dist", "site", "__pycache__", "*.pyc",
    ".*_cache", ".hypothesis", "*.sqlite3", ".coverage*",
)  # fmt: skip


@pytest.fixture(scope="module")
def clean_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Copy the project as a fresh clone would have it, to build distributions from."""
    source = tmp_path_factory.mktemp("source") / "django-idempotency"
    shutil.copytree(ROOT, source, ignore=NOT_IN_A_CLONE)
    return source


def build_distribution(source: Path, kind: str, out: Path) -> Path:
    """Build the sdist or the wheel of the project at ``source`` into ``out``; return its path."""
    subprocess.run(
        [sys.executable, "-m", "build", f"--{kind}", "--no-isolation", "--outdir", str(out)],
        cwd=source,
        check=True,
        capture_output=True,
    )
    pattern = "django_idempotency-*.tar.gz" if kind == "sdist" else "django_idempotency-*.whl"
    (path,) = out.glob(pattern)
    return path


def project_files_under(tree: str) -> set[str]:
    """Return the files of one top-level directory, as paths relative to the project."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / tree).rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix not in (".pyc", ".sqlite3", ".sqlite3-journal")
    }


@pytest.mark.django_db
def test_migrations__none_missing() -> None:
    out = StringIO()

    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=StringIO())

    assert "No changes detected" in out.getvalue()


def test_version__is_a_dev_release_while_the_changelog_has_no_release() -> None:
    version = Version(PYPROJECT["project"]["version"])
    newest_section = re.search(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)

    assert newest_section is not None
    if newest_section[1] == "Unreleased":
        assert version.is_devrelease, f"{version} is not marked as a development release"
    else:
        assert newest_section[1].startswith(str(version))


def test_metadata__declares_its_development_status_and_urls() -> None:
    project = PYPROJECT["project"]

    assert [c for c in project["classifiers"] if c.startswith("Development Status ::")] == [
        "Development Status :: 3 - Alpha"
    ]
    assert set(project["urls"]) == {"Homepage", "Documentation", "Changelog", "Issues"}


def test_metadata__problem_type_uris_point_into_the_documentation() -> None:
    documentation = PYPROJECT["project"]["urls"]["Documentation"]

    assert exceptions.PROBLEM_TYPE_BASE.startswith(documentation)
    assert PYPROJECT["project"]["urls"]["Changelog"].startswith(documentation)


@pytest.fixture(scope="module")
def wheel(clean_source: Path, tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    dist = tmp_path_factory.mktemp("dist")
    return zipfile.ZipFile(build_distribution(clean_source, "wheel", dist))


def test_wheel__contains_migrations_and_py_typed(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())

    assert "django_idempotency/py.typed" in names
    assert "django_idempotency/migrations/0001_initial.py" in names
    assert "django_idempotency/migrations/__init__.py" in names
    assert "django_idempotency/management/commands/purge_idempotency_keys.py" in names


def test_wheel__contains_nothing_from_tests_or_the_example(wheel: zipfile.ZipFile) -> None:
    top_level = {name.split("/")[0] for name in wheel.namelist()}

    assert top_level == {"django_idempotency", *{n for n in top_level if n.endswith(".dist-info")}}


@pytest.fixture(scope="module")
def unpacked_sdist(clean_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the sdist and return the project directory it unpacks to."""
    sdist = build_distribution(clean_source, "sdist", tmp_path_factory.mktemp("dist"))
    into = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as archive:
        archive.extractall(into, filter="data")
    (project,) = into.iterdir()
    return project


@pytest.mark.parametrize("tree", SDIST_TREES)
def test_sdist__contains_every_file_of(tree: str, unpacked_sdist: Path) -> None:
    shipped = {
        path.relative_to(unpacked_sdist).as_posix()
        for path in (unpacked_sdist / tree).rglob("*")
        if path.is_file()
    }

    assert project_files_under(tree) - shipped == set()


def test_sdist__contains_the_project_files_beside_the_package(unpacked_sdist: Path) -> None:
    assert [name for name in SDIST_FILES if not (unpacked_sdist / name).is_file()] == []


def test_sdist__its_tests_pass_from_the_unpacked_tree(unpacked_sdist: Path) -> None:
    env = {**os.environ, "IDEMPOTENCY_TEST_DATABASE": "sqlite"}
    env.pop("DEV_PY_REPORT", None)
    imported_from = subprocess.run(
        [sys.executable, "-c", "import django_idempotency; print(django_idempotency.__file__)"],
        cwd=unpacked_sdist,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not postgres and not redis and not browser",
            *SDIST_TESTS,
        ],
        cwd=unpacked_sdist,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert Path(imported_from).is_relative_to(unpacked_sdist)  # the sdist's code, not ours
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"\b\d+ passed\b", result.stdout)


def test_matrix__ci_runs_every_python_and_django_the_classifiers_claim() -> None:
    import noxfile

    classifiers = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["classifiers"]

    def claimed(prefix: str) -> set[str]:
        return {
            c.removeprefix(prefix) for c in classifiers if re.fullmatch(rf"{prefix}\d+\.\d+", c)
        }

    pythons = claimed("Programming Language :: Python :: ")
    djangos = claimed("Framework :: Django :: ")
    # Django 6 needs Python 3.12 or newer.
    supported = {
        (python, django)
        for python in pythons
        for django in djangos
        if Version(django) < Version("6") or Version(python) >= Version("3.12")
    }
    assert set(noxfile.MATRIX) == supported
    assert noxfile.MAIN in noxfile.WHOLE_SUITE
