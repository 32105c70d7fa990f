"""The package's shape: data flows one way (DESIGN §6)."""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent


def test_imports__keep_the_contracts_in_pyproject(capsys: pytest.CaptureFixture[str]) -> None:
    exit_code = lint_imports(
        config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True
    )

    assert exit_code == 0, capsys.readouterr().out
