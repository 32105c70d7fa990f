"""The app's migrations are safe on a live table: no rewrite of the table (docs/deploys.md)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

APP = "django_idempotency"


def latest() -> tuple[str, str]:
    """Return the app's newest migration, where every test leaves the database."""
    (leaf,) = MigrationExecutor(connection).loader.graph.leaf_nodes(APP)
    return (str(leaf[0]), str(leaf[1]))


def migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def relfilenode() -> int:
    """Return the file the table's rows live in: a rewrite gives it a new one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relfilenode FROM pg_class "
            "WHERE oid = 'django_idempotency_idempotencykey'::regclass"
        )
        return int(cursor.fetchone()[0])


@pytest.fixture
def before_versions() -> Iterator[None]:
    """The table as the release before fingerprint versions left it, with a record."""
    migrate((APP, "0002_postgresql_functions"))
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO django_idempotency_idempotencykey (scope, key, state, fingerprint, "
            "token, method, path, created_at, expires_at, response_headers, response_body) "
            "VALUES ('user:1', 'k', 'completed', %s, 't', 'POST', '/', %s, %s, '[]', '')",
            ["a" * 64, timezone.now(), timezone.now() + timedelta(days=1)],
        )
    yield
    migrate(latest())


@pytest.mark.usefixtures("before_versions")
def test_fingerprint_version_migration__widens_the_column_without_a_rewrite() -> None:
    file_before = relfilenode()

    migrate((APP, "0003_fingerprint_version"))

    assert relfilenode() == file_before
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT character_maximum_length FROM information_schema.columns "
            "WHERE table_name = 'django_idempotency_idempotencykey' AND column_name = 'fingerprint'"
        )
        assert cursor.fetchone()[0] == 128
        cursor.execute("SELECT fingerprint FROM django_idempotency_idempotencykey")
        assert cursor.fetchall() == [("a" * 64,)]


def replaced_state_of_a_takeover() -> str | None:
    """Claim over an expired record through the claim function; return what it says it replaced."""
    past = timezone.now() - timedelta(minutes=1)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO django_idempotency_idempotencykey (scope, key, state, fingerprint, "
            "token, method, path, created_at, expires_at, response_headers, response_body) "
            "VALUES ('user:1', 'dead', 'completed', 'f', 't', 'POST', '/', %s, %s, '[]', '')",
            [past, past],
        )
        cursor.execute(
            "SELECT o_claimed, o_state FROM django_idempotency_claim('user:1', 'dead', 'f', "
            "'t2', 'POST', '/', '60 seconds'::interval, true)"
        )
        claimed, state = cursor.fetchone()
        cursor.execute("DELETE FROM django_idempotency_idempotencykey")
    assert claimed is True
    return state  # type: ignore[no-any-return]


def test_claim_function_migration__names_the_replaced_record_and_reverses() -> None:
    migrate((APP, "0003_fingerprint_version"))
    try:
        assert replaced_state_of_a_takeover() is None
        migrate((APP, "0004_claim_names_replaced_record"))
        assert replaced_state_of_a_takeover() == "completed"
    finally:
        migrate(latest())
