"""Widen the fingerprint to hold its version as well as its 64-character digest.

Safe on a live table: PostgreSQL widens a ``varchar`` without rewriting the table or its
indexes (the column has none), MySQL and MariaDB widen it in place, since a column that
already needs two length bytes keeps them. SQLite rebuilds the table, as it does for any
change of a column.
"""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_idempotency", "0002_postgresql_functions")]

    operations = [
        migrations.AlterField(
            model_name="idempotencykey",
            name="fingerprint",
            field=models.CharField(max_length=128, verbose_name="request fingerprint"),
        ),
    ]
