"""Run a test's async request as Django's ASGIHandler does: its sync code in a thread of its own.

``AsyncClient`` runs a request's sync code (the middleware's engine calls, ``sync_to_async``
views) on whichever thread asgiref picks; under a server each request gets a thread, and so a
database connection, of its own, closed when the request ends. ``request_thread()`` does both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgiref.sync import ThreadSensitiveContext, sync_to_async

from django_idempotency.testing import close_thread_connections


@asynccontextmanager
async def request_thread() -> AsyncIterator[None]:
    """Give the sync code of the requests inside one thread, and close its connections after."""
    async with ThreadSensitiveContext():
        try:
            yield
        finally:
            await sync_to_async(close_thread_connections)()
