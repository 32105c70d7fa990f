"""One process of tests/test_functions.py's process race: call an idempotent function once.

Run as ``python -m tests.call_process <gate dir>`` under ``tests.live_settings`` on the
PostgreSQL test database: it sets Django up, says it is ready (a file in the gate dir),
waits for the test's ``go`` file, calls ``pay_in_a_process`` and prints its result as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import django

GATE_SECONDS = 60.0


def main(gate: Path) -> None:
    django.setup()
    from django_idempotency.functions import once
    from tests.testapp.models import Execution

    def pay(order_id: int, amount: Decimal) -> dict[str, Any]:
        execution = Execution.objects.create(label=f"process charge {order_id}")
        return {"amount": amount, "execution": execution.pk, "pid": os.getpid()}

    (gate / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + GATE_SECONDS
    while not (gate / "go").exists():
        if time.monotonic() > deadline:
            sys.exit("the test never opened the gate")
        time.sleep(0.01)
    result = once("order-88", pay, 88, Decimal("7.00"), scope="process-race", wait_timeout=30)
    print(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
