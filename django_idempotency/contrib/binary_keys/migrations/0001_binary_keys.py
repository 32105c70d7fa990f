"""Give an existing MySQL or MariaDB table's ``scope`` and ``key`` the byte-exact collation.

What ``django_idempotency``'s 0001 does for new installs; on a table that already has it,
the same statement again. Nothing on other databases.
"""

from __future__ import annotations

from django.db import migrations

from django_idempotency.migrations._mysql import BinaryKeysOnMySQL


class Migration(migrations.Migration):
    dependencies = [("django_idempotency", "0001_initial")]

    operations = [BinaryKeysOnMySQL()]
