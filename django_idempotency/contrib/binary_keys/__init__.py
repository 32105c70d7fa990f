"""Opt-in: convert an existing MySQL or MariaDB keys table to byte-exact keys (docs/scale.md).

Add ``"django_idempotency.contrib.binary_keys"`` to ``INSTALLED_APPS`` and ``migrate``: its
one migration gives ``scope`` and ``key`` the binary collation new installs get. It rebuilds
the table, so it is a step of its own, run when that may take its time.
"""
