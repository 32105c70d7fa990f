"""Signals sent by the engine."""

from __future__ import annotations

from django.dispatch import Signal

#: Sent each time a request runs unprotected because the store failed and the view fails open.
#: Arguments: ``request``, ``key``, ``error``.
idempotency_failed_open = Signal()

#: Sent each time a stored response is replayed. Arguments: ``request``, ``key``.
idempotency_replayed = Signal()
