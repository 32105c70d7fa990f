"""What the migrations share: the keys' columns made byte-exact on MySQL and MariaDB.

A new MySQL or MariaDB database compares text case- and accent-insensitively, and ignores
trailing spaces (``utf8mb4_general_ci``, ``utf8mb4_0900_ai_ci``): two keys a client
tells apart, ``ABC`` and ``abc``, would be one record. ``scope`` and ``key`` take the
binary, no-pad collation of ``utf8mb4`` instead, which compares every byte. Not a migration
itself; nothing happens on other databases.
"""

from __future__ import annotations

from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState

#: Frozen as of the migrations that use it.
_TABLE = "django_idempotency_idempotencykey"
_COLUMNS = ("scope", "key")
_LENGTH = 255


def binary_collation(connection: object) -> str:
    """Return the byte-exact, no-pad collation of utf8mb4 on this server.

    MariaDB's since 10.2; MySQL's since 8.0 (Django supports no older MySQL).
    """
    is_mariadb = getattr(connection, "mysql_is_mariadb", False)
    return "utf8mb4_nopad_bin" if is_mariadb else "utf8mb4_0900_bin"


class BinaryKeysOnMySQL(migrations.operations.base.Operation):
    """Give ``scope`` and ``key`` a byte-exact collation on MySQL and MariaDB; else nothing.

    Rewrites the table (``ALTER TABLE ... MODIFY``): on a large existing table, run it when
    a rebuild may take its time (docs/scale.md, "MySQL and MariaDB").
    """

    reversible = True
    reduces_to_sql = True

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass  # the model's fields are unchanged: only the database's comparison is

    def database_forwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        connection = schema_editor.connection
        if connection.vendor != "mysql":
            return
        collation = binary_collation(connection)
        quote = schema_editor.quote_name
        changes = ", ".join(
            f"MODIFY {quote(column)} varchar({_LENGTH}) CHARACTER SET utf8mb4 "
            f"COLLATE {collation} NOT NULL"
            for column in _COLUMNS
        )
        schema_editor.execute(f"ALTER TABLE {quote(_TABLE)} {changes}")

    def database_backwards(
        self,
        app_label: str,
        schema_editor: BaseDatabaseSchemaEditor,
        from_state: ProjectState,
        to_state: ProjectState,
    ) -> None:
        pass  # byte-exact keys stay so: the earlier collation could merge stored keys

    def describe(self) -> str:
        return "Compare scope and key byte for byte on MySQL and MariaDB"
