"""Keys compared byte for byte on every database; on MySQL and MariaDB by the migrations.

New installs get the binary collation from 0001; an existing MariaDB table gets it from the
opt-in app ``django_idempotency.contrib.binary_keys``, whose operation is tried here on a
table put back to the server's default collation. Elsewhere the operation does nothing.
"""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module

import pytest
from django.db import connection

from django_idempotency.migrations._mysql import BinaryKeysOnMySQL, binary_collation
from django_idempotency.storage import Claim, DatabaseStorage, Record

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "django_idempotency_idempotencykey"
LEASE = timedelta(minutes=5)


def collations() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_name, collation_name FROM information_schema.columns "
            "WHERE table_schema = DATABASE() AND table_name = %s AND column_name IN "
            "('scope', 'key')",
            [TABLE],
        )
        return {name.lower(): collation for name, collation in cursor.fetchall()}


def convert() -> None:
    with connection.schema_editor() as editor:
        BinaryKeysOnMySQL().database_forwards("django_idempotency", editor, None, None)  # type: ignore[arg-type]


def test_the_opt_in_app__has_one_migration_that_converts_the_keys() -> None:
    module = "django_idempotency.contrib.binary_keys.migrations.0001_binary_keys"
    migration = import_module(module).Migration("0001_binary_keys", "binary_keys")

    assert [type(operation) for operation in migration.operations] == [BinaryKeysOnMySQL]
    assert ("django_idempotency", "0001_initial") in migration.dependencies


def test_an_existing_table_with_the_servers_collation__becomes_byte_exact() -> None:
    if connection.vendor != "mysql":  # elsewhere keys are compared by bytes already
        with connection.schema_editor(collect_sql=True) as editor:
            BinaryKeysOnMySQL().database_forwards("django_idempotency", editor, None, None)  # type: ignore[arg-type]
        assert editor.collected_sql == []
        return
    assert set(collations().values()) == {binary_collation(connection)}  # a new install's
    with connection.cursor() as cursor:  # as a table made before 0001 converted it
        cursor.execute(
            f"ALTER TABLE {TABLE} MODIFY scope varchar(255) COLLATE utf8mb4_general_ci NOT NULL,"
            " MODIFY `key` varchar(255) COLLATE utf8mb4_general_ci NOT NULL"
        )
    storage = DatabaseStorage()
    assert isinstance(storage.claim("s", "ABC", "fp", lease=LEASE), Claim)
    assert isinstance(storage.claim("s", "abc", "fp", lease=LEASE), Record)  # merged: the bug

    convert()

    assert set(collations().values()) == {binary_collation(connection)}
    assert isinstance(storage.claim("s", "abc", "fp", lease=LEASE), Claim)
    assert storage.get("s", "ABC") is not None
