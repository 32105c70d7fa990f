"""Settings for a live gunicorn serving the test database (see tests/test_processes.py).

The test process passes the test database's name and the storage and lease under test
through the environment; everything else is the test suite's own settings.
"""

from __future__ import annotations

import os
from typing import Any, cast

from tests.settings import *  # noqa: F403
from tests.settings import CACHES, DATABASES, MIDDLEWARE

DATABASES["default"]["NAME"] = os.environ["IDEMPOTENCY_LIVE_DATABASE_NAME"]
ROOT_URLCONF = "tests.live_urls"
# Outermost, so the worker's pid is added after the idempotency middleware stored the
# response: it is never part of what a replay carries.
MIDDLEWARE = ["tests.live_urls.worker_pid_middleware", *MIDDLEWARE]

IDEMPOTENCY_STORAGE = os.environ["IDEMPOTENCY_LIVE_STORAGE"]
IDEMPOTENCY_CACHE_ALIAS = "idempotency"
IDEMPOTENCY_LEASE = float(os.environ["IDEMPOTENCY_LIVE_LEASE"])

# A test that stalls or kills Redis gives the server a redis-server of its own, and the
# socket timeout after which a stalled Redis counts as unavailable.
_idempotency_cache = cast("dict[str, Any]", CACHES["idempotency"])
if "IDEMPOTENCY_LIVE_REDIS_URL" in os.environ:
    _idempotency_cache["LOCATION"] = os.environ["IDEMPOTENCY_LIVE_REDIS_URL"]
if "IDEMPOTENCY_LIVE_REDIS_SOCKET_TIMEOUT" in os.environ:
    _socket_timeout = float(os.environ["IDEMPOTENCY_LIVE_REDIS_SOCKET_TIMEOUT"])
    _idempotency_cache["OPTIONS"].update(
        SOCKET_TIMEOUT=_socket_timeout, SOCKET_CONNECT_TIMEOUT=_socket_timeout
    )
