"""The PostgreSQL round trips a keyed request needs, timed bare: the floor under its ratio.

``bench.requests`` measures whole requests. This module sends, on the same connection and in the
same run, only the statements each kind of request exchanges with PostgreSQL, through psycopg
with no Django and no view around them:

- the bare view: its ``INSERT``, committed on its own (autocommit);
- a first request with a key: the claim function, ``BEGIN``, the view's ``INSERT``, and the
  completion function with its ``COMMIT`` (docs/design-choice.md, "Round trips on PostgreSQL");
- a replay: the claim function answering a completed record.

What a first request's sequence costs over the bare one is database time no Python can remove
while the claim commits before the view runs (docs/design-choice.md, "The claim's commit"): the
bare view's median plus it is the fastest a first request can be.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

_CLAIM = (
    "SELECT * FROM django_idempotency_claim(%s::varchar, %s::varchar, %s::varchar, "
    "%s::varchar, %s::varchar, %s::text, %s::interval, %s::boolean)"
)
_COMPLETE_AND_COMMIT = (
    "SELECT django_idempotency_complete(%s::varchar, %s::timestamptz, %s::timestamptz, "
    "%s::integer, %s::jsonb, %s::bytea, %s::varchar, %s::varchar, %s::varchar, true); COMMIT"
)
_INSERT = (
    'INSERT INTO "bench_payment" ("amount", "currency", "reference", "created_at") '
    "VALUES (%s, %s, %s, now()) RETURNING id"
)
_SCOPE = "bench-floor"
_HEADERS = '[["Content-Type", "application/json"]]'
_BODY = b'{"id": 1, "amount": "12.50", "currency": "EUR", "reference": "floor"}'


def measure(
    connection: Any, requests: int, seed: int, *, flush_claims: bool = True
) -> dict[str, list[int]]:
    """Return the ns each sequence took in each of ``requests`` interleaved rounds.

    ``connection`` is a psycopg 3 connection in autocommit mode (Django's, outside a block);
    ``flush_claims`` is the storage option of that name, passed to the claim function.
    """
    lease = timedelta(seconds=60)

    def insert(reference: str) -> None:
        connection.execute(_INSERT, ("12.50", "EUR", reference)).fetchone()

    def claim(key: str) -> None:
        row = connection.execute(
            _CLAIM, (_SCOPE, key, "fingerprint", key, "POST", "/plain/", lease, flush_claims)
        ).fetchone()
        if row is None or row[1] is False:
            raise RuntimeError(f"the floor's claim of {key!r} found a record: {row}")

    def bare() -> None:
        insert(f"floor-{uuid.uuid4().hex[:20]}")

    completed: list[str] = []

    def first() -> None:
        key = uuid.uuid4().hex
        claim(key)
        connection.execute("BEGIN")
        insert(f"floor-{key[:20]}")
        now = datetime.now(UTC)
        connection.execute(
            _COMPLETE_AND_COMMIT,
            ("completed", now, now + timedelta(days=1), 201, _HEADERS, _BODY, _SCOPE, key, key),
        )
        completed.append(key)

    def replay() -> None:
        key = completed[-1]
        row = connection.execute(
            _CLAIM, (_SCOPE, key, "fingerprint", "other", "POST", "/plain/", lease, flush_claims)
        ).fetchone()
        if row is None or row[1] is not False:
            raise RuntimeError(f"the floor's replay of {key!r} found no completed record: {row}")

    sequences: dict[str, Callable[[], None]] = {"bare": bare, "first": first, "replay": replay}
    first()  # a completed key for the first replay
    timings: dict[str, list[int]] = {name: [] for name in sequences}
    rng = random.Random(seed)
    order = list(sequences)
    for _ in range(requests):
        rng.shuffle(order)
        for name in order:
            started = time.perf_counter_ns()
            sequences[name]()
            timings[name].append(time.perf_counter_ns() - started)
    connection.execute("DELETE FROM django_idempotency_idempotencykey WHERE scope = %s", (_SCOPE,))
    connection.execute("DELETE FROM bench_payment WHERE reference LIKE 'floor-%%'")
    return timings
