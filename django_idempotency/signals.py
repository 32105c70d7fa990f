"""Signals sent by the engine: one per outcome of a keyed request (docs/observability.md).

Every signal is sent with ``sender=Policy`` and the same arguments: ``request``, ``key``,
``scope``, ``outcome`` (an ``outcomes.Outcome``), ``method``, ``view`` (the URL pattern's view
name, or ``""`` when the request was not resolved), ``operation`` and ``store_seconds`` (the
store call the outcome came from, ``"claim"``, ``"complete"`` or ``"release"``, and how long it
took; ``None`` when no store call made it), ``status`` (the stored or answered HTTP status, or
``None``), ``error`` (the exception behind it, or ``None``) and ``expired_for`` (for
``taken_over`` and ``expired``, how long the record taken over had been dead, a
``timedelta``; else ``None``). An idempotent function call (docs/functions.md) sends them
too, with ``request=None``, ``method="CALL"`` and the function's dotted name as ``view``.
"""

from __future__ import annotations

from django.dispatch import Signal

#: The request claimed its key: its view runs now.
idempotency_claimed = Signal()

#: The request took over a key whose earlier request never finished within its lease (it
#: crashed, or runs on past it): its view runs now, again.
idempotency_taken_over = Signal()

#: The request claimed a key whose stored response had expired (``IDEMPOTENCY_TTL``): its
#: view runs now, again. Seen with ``DatabaseStorage`` until the purge, with ``CacheStorage``
#: only with tombstones (docs/observability.md, "Retries after expiry").
idempotency_expired = Signal()

#: The view's response was stored under the key (``status``); a retry replays it.
idempotency_completed = Signal()

#: A stored response is replayed instead of running the view.
idempotency_replayed = Signal()

#: The key was used before for another request: refused (422, or ``mismatch_status``).
idempotency_mismatch = Signal()

#: The key's first request still runs: refused with 409, at once or after ``wait_timeout``.
idempotency_in_progress = Signal()

#: The request's claim ended before its view finished, and another request took the key.
idempotency_lease_expired = Signal()

#: The key was freed without a stored response (the view failed or was refused): a retry runs.
idempotency_released = Signal()

#: The key's response could not be stored (too large, or a streaming one): refused (422).
idempotency_not_replayable = Signal()

#: The store failed and the request was refused with 503 (fail-closed), or, once its view
#: had run outside a shared transaction, its response was sent but not stored.
idempotency_store_unavailable = Signal()

#: A stored response is sealed and no configured key opens it: refused (503), never run again.
idempotency_response_unreadable = Signal()

#: The store failed and a fail-open view runs unprotected.
idempotency_failed_open = Signal()

#: A stored response is coded in a way the retry does not accept: refused (406).
idempotency_replay_not_acceptable = Signal()
