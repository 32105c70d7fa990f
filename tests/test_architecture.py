"""The package's shape: data flows one way (DESIGN §6) and every module stays small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_idempotency"
#: A module past this many lines does more than one job (issue 8).
MAX_MODULE_LINES = 400


def test_imports__keep_the_contracts_in_pyproject(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = lint_imports(
        config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True
    )

    assert exit_code == 0, capsys.readouterr().out


def test_modules__are_at_most_400_lines_each() -> None:
    too_long = {
        str(path.relative_to(ROOT)): length
        for path in sorted(PACKAGE.rglob("*.py"))
        if (length := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }

    assert too_long == {}


def test_modules__each_open_with_a_line_that_says_its_job() -> None:
    silent = [
        str(path.relative_to(ROOT))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in path.parts
        and not (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip()
    ]

    assert silent == []
