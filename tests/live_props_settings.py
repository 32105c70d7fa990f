"""Settings for the live gunicorn of tests/test_live_properties.py: ``tests.live_settings``,
plus the tracebacks of failed requests in the server's log, which the test shows on failure."""

from __future__ import annotations

from tests.live_settings import *  # noqa: F403

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django.request": {"handlers": ["stderr"], "level": "ERROR", "propagate": False},
        "django_idempotency": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
