"""What PostgreSQL says is waiting on a lock: how race tests know a contender is blocked."""

from __future__ import annotations

from django.db import connection


def claims_waiting_on_a_lock() -> list[str]:
    """Return the claim calls of this test database that wait on a lock, as sent."""
    return statements_waiting_on_a_lock("%django_idempotency_claim(%")


def statements_waiting_on_a_lock(like: str) -> list[str]:
    """Return the statements of this test database matching ``like`` that wait on a lock."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %s",
            [like],
        )
        return [str(row[0]) for row in cursor.fetchall()]
