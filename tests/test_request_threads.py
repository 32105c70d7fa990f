"""The async tests' request thread leaves no database connection open behind it."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from tests.request_threads import request_thread
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def test_request_thread__closes_the_connection_its_thread_opened() -> None:
    # On in-memory SQLite too, where Django's close() keeps the connection open: Python 3.13
    # warns when it is collected with the thread, and warnings fail the suite.
    opened: list[BaseDatabaseWrapper] = []

    def query() -> None:
        Execution.objects.count()
        opened.append(connections["default"])

    async def request() -> None:
        async with request_thread():
            await sync_to_async(query)()

    asyncio.run(request())

    (thread_connection,) = opened
    assert thread_connection is not connections["default"]  # the request had a thread of its own
    assert thread_connection.connection is None
