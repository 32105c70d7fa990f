"""Make the database store fail as a server that went away would, on a real connection."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import OperationalError, connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from django_idempotency.models import IdempotencyKey

TABLE = IdempotencyKey._meta.db_table


@contextmanager
def failing_queries(
    matches: Callable[[str], bool], message: str = "server closed the connection unexpectedly"
) -> Iterator[None]:
    """Fail the queries ``matches`` picks as a store that went away would, on a real connection.

    On this thread's connection and on every one opened meanwhile: the async path's sync code
    runs in threads of its own, each with its own connection.
    """

    def refuse(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if matches(sql):
            raise OperationalError(message)
        return execute(sql, params, many, context)

    wrapped: list[BaseDatabaseWrapper] = []

    def wrap(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
        connection.execute_wrappers.append(refuse)
        wrapped.append(connection)

    connection_created.connect(wrap)
    try:
        with connection.execute_wrapper(refuse):
            yield
    finally:
        connection_created.disconnect(wrap)
        for opened in wrapped:
            opened.execute_wrappers.remove(refuse)


#: On PostgreSQL the claim and the completion are function calls (migration 0002): each counts
#: as the statement it stands for, the claim's ``INSERT`` and the completion's ``UPDATE``.
FUNCTIONS = {"INSERT": "django_idempotency_claim(", "UPDATE": "django_idempotency_complete("}


def on_the_idempotency_table(sql: str) -> bool:
    return TABLE in sql or any(function in sql for function in FUNCTIONS.values())


def on_the_table(verb: str) -> Callable[[str], bool]:
    """Pick the statements of one kind (``"UPDATE"``, ``"DELETE"``…) on the keys' table."""
    function = FUNCTIONS.get(verb)

    def matches(sql: str) -> bool:
        if function is not None and function in sql:
            return True
        return sql.startswith(verb) and TABLE in sql

    return matches
