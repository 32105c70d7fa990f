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
LATEST = (APP, "0003_fingerprint_version")


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
    migrate(LATEST)


@pytest.mark.usefixtures("before_versions")
def test_fingerprint_version_migration__widens_the_column_without_a_rewrite() -> None:
    file_before = relfilenode()

    migrate(LATEST)

    assert relfilenode() == file_before
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT character_maximum_length FROM information_schema.columns "
            "WHERE table_name = 'django_idempotency_idempotencykey' AND column_name = 'fingerprint'"
        )
        assert cursor.fetchone()[0] == 128
        cursor.execute("SELECT fingerprint FROM django_idempotency_idempotencykey")
        assert cursor.fetchall() == [("a" * 64,)]
