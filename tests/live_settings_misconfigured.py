"""Settings for a live gunicorn with a bad ``IDEMPOTENCY_TTL`` (tests/test_misconfiguration.py).

gunicorn runs no system checks, so only the requests themselves can report the bad setting:
Django's request logger goes to the server's log, where the test reads it.
"""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403

DATABASES["default"]["NAME"] = os.environ["IDEMPOTENCY_LIVE_DATABASE_NAME"]  # noqa: F405
ROOT_URLCONF = "tests.live_urls"

IDEMPOTENCY_TTL = "3600"  # seconds as a string: the mistake under test

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"handlers": ["stderr"], "level": "ERROR"}},
}
