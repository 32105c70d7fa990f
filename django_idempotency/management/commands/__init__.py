"""The management commands Django finds for this app: purge_idempotency_keys."""
