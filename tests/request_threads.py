"""Run a test's async request as Django's ASGIHandler does: its sync code in a thread of its own.

``AsyncClient`` runs a request's sync code (the middleware's engine calls, ``sync_to_async``
views) on whichever thread asgiref picks; under a server each request gets a thread, and so a
database connection, of its own, closed when the request ends. ``request_thread()`` does both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper


@asynccontextmanager
async def request_thread() -> AsyncIterator[None]:
    """Give the sync code of the requests inside one thread, and close its connections after."""
    async with ThreadSensitiveContext():
        try:
            yield
        finally:
            await sync_to_async(close_thread_connections)()


def close_thread_connections() -> None:
    """Close every database connection this thread opened, in-memory SQLite's included.

    Django ignores ``close()`` on an in-memory SQLite connection, since closing the last one
    drops the database. A request thread's connection is never the last (the test's own thread
    keeps the test database open); left open, it is collected with the thread, which Python
    3.13 reports as ``ResourceWarning: unclosed database``.
    """
    for connection in connections.all(initialized_only=True):
        if isinstance(connection, SQLiteDatabaseWrapper) and connection.is_in_memory_db():
            BaseDatabaseWrapper.close(connection)
        else:
            connection.close()
