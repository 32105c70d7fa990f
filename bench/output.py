"""Where a benchmark's results go besides its table: standard output or a JSON file."""

from __future__ import annotations

import json
import sys
from typing import Any


def write_json(results: dict[str, Any], target: str | None) -> None:
    """Write ``results`` as JSON to ``target`` (``-`` is standard output; None writes nothing)."""
    if target == "-":
        json.dump(results, sys.stdout, indent=2)
        print()
    elif target:
        with open(target, "w") as file:
            json.dump(results, file, indent=2)
