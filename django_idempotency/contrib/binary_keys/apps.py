"""The opt-in app whose migration makes an existing MySQL or MariaDB table's keys byte-exact."""

from __future__ import annotations

from django.apps import AppConfig


class BinaryKeysConfig(AppConfig):
    name = "django_idempotency.contrib.binary_keys"
    label = "django_idempotency_binary_keys"
    verbose_name = "Idempotency: byte-exact keys on MySQL and MariaDB"
