"""PostgreSQL's request path: the claim and completion functions of migration 0002, called.

The functions run the same statements as ``DatabaseStorage``'s portable SQL, but the server
keeps their plans per connection, and a first request's read and claim are one round trip. A
completion that ends the storage's own transaction is sent with its ``COMMIT``
(docs/design-choice.md, "Round trips on PostgreSQL").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError
from django.db.backends.base.base import BaseDatabaseWrapper

from django_idempotency.storage.base import OwnershipLost, StorageUnavailable

_CLAIM = (
    "SELECT * FROM django_idempotency_claim(%s::varchar, %s::varchar, %s::varchar, "
    "%s::varchar, %s::varchar, %s::text, %s::interval, %s::boolean)"
)
_COMPLETE = (
    "SELECT django_idempotency_complete(%s::varchar, %s::timestamptz, %s::timestamptz, "
    "%s::integer, %s::jsonb, %s::bytea, %s::varchar, %s::varchar, %s::varchar, %s::boolean)"
)
#: What django_idempotency_complete raises, when told to, for a lost claim.
_CLAIM_LOST_SQLSTATE = "DI001"


def uses_functions(connection: BaseDatabaseWrapper) -> bool:
    """Whether ``connection`` takes the claim and the completion as function calls."""
    return connection.vendor == "postgresql"


def claim(connection: BaseDatabaseWrapper, params: Sequence[Any]) -> tuple[Any, ...]:
    """Return the claim function's row: the store's time, claimed (or ``None``), the record."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM, params)
        row: tuple[Any, ...] | None = cursor.fetchone()
    assert row is not None  # the function answers one row, always
    return row


def complete(connection: BaseDatabaseWrapper, params: Sequence[Any]) -> bool:
    """Complete the record; return whether the claim still held it."""
    with connection.cursor() as cursor:
        cursor.execute(_COMPLETE, [*params, False])
        row = cursor.fetchone()
    return bool(row and row[0])


def can_commit_with_completion(connection: BaseDatabaseWrapper) -> bool:
    """Whether a completion can carry the ``COMMIT`` after it in one round trip.

    Two statements in one ``execute`` need client-side binding, Django's default unless
    ``OPTIONS["server_side_binding"]``; and psycopg 3, which skips the ``COMMIT`` that
    ``atomic()`` asks for next when the server says none is open (psycopg 2 sends it again).
    """
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    options = connection.settings_dict.get("OPTIONS", {})
    return bool(is_psycopg3) and options.get("server_side_binding") is not True


def complete_and_commit(
    connection: BaseDatabaseWrapper, params: Sequence[Any], *, key: str
) -> None:
    """Complete the record and commit the transaction it shares with the view.

    A lost claim raises in the function, which keeps the ``COMMIT`` from running: the
    transaction stays open, failed, for ``atomic()`` to roll back with the view's writes.
    A ``COMMIT`` that fails is raised as it is; any other failure is ``StorageUnavailable``.
    """
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"{_COMPLETE}; COMMIT", [*params, True])
    except DatabaseError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == _CLAIM_LOST_SQLSTATE:
            raise OwnershipLost("the claim ended before the view finished") from None
        if _committed_and_failed(connection):
            # The COMMIT itself ran and failed (a deferred constraint of the view's writes):
            # raised as from a commit, by which nothing was kept.
            raise
        # The completion failed or never reached the server, or the connection is gone
        # (a COMMIT then either kept the view's writes with the completed record, or
        # nothing): as for any store failure, the client is told to retry.
        raise StorageUnavailable("the idempotency database did not answer") from exc


def _committed_and_failed(connection: BaseDatabaseWrapper) -> bool:
    """Whether the server ended the transaction: only a failed ``COMMIT`` leaves it idle."""
    from psycopg.pq import TransactionStatus

    status = connection.connection.info.transaction_status
    return bool(status == TransactionStatus.IDLE)
