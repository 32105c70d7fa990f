"""Service detection: PostgreSQL and Redis tests run for real, or say plainly why not.

With ``IDEMPOTENCY_REQUIRE_SERVICES=1`` (CI sets it) a missing service fails the tests
that need it instead of skipping them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from django.conf import settings

if TYPE_CHECKING:
    from tests.redis_servers import RedisServer

REQUIRE_SERVICES = os.environ.get("IDEMPOTENCY_REQUIRE_SERVICES") == "1"


def is_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def is_server_database() -> bool:
    """Whether the tests run on a database server (PostgreSQL or MariaDB), not SQLite."""
    return settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3"


def redis_problem() -> str | None:
    """Return why Redis cannot be used, or None when it answers PING."""
    from urllib.parse import urlparse

    url = urlparse(settings.REDIS_URL)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379), 1) as s:
            s.sendall(b"PING\r\n")
            if not s.recv(16).startswith(b"+PONG"):
                return f"Redis at {settings.REDIS_URL} did not answer PING"
    except OSError as exc:
        return f"Redis at {settings.REDIS_URL} is unreachable ({exc})"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    redis_reason = None
    for item in items:
        if "postgres" in item.keywords and not is_postgres():
            reason = "needs PostgreSQL: runs in the PostgreSQL pass (dev.py test)"
            if REQUIRE_SERVICES:
                item.add_marker(pytest.mark.usefixtures("_fail_without_postgres"))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))
        elif "server_db" in item.keywords and not is_server_database():
            reason = "needs a database server: runs in the PostgreSQL and MariaDB passes"
            if REQUIRE_SERVICES:
                item.add_marker(pytest.mark.usefixtures("_fail_without_postgres"))
            else:
                item.add_marker(pytest.mark.skip(reason=reason))
        if "redis" in item.keywords:
            redis_reason = redis_reason or redis_problem() or ""
            if redis_reason and not REQUIRE_SERVICES:
                item.add_marker(pytest.mark.skip(reason=f"needs Redis: {redis_reason}"))


@pytest.fixture
def _fail_without_postgres() -> None:
    pytest.fail(
        "this test needs PostgreSQL (or MariaDB) and IDEMPOTENCY_REQUIRE_SERVICES=1 forbids "
        "skipping"
    )


@pytest.fixture
def redis_cache() -> Iterator[object]:
    """The real Redis cache behind the ``idempotency`` alias, flushed around the test."""
    problem = redis_problem()
    if problem:
        pytest.fail(f"Redis is required here: {problem}")
    from django.core.cache import caches

    cache = caches["idempotency"]
    cache.clear()
    yield cache
    cache.clear()


#: The storage each ``storage_backend`` value names; "cache-tombstones" only where a test
#: asks for it (``WITH_TOMBSTONES`` in test_behaviour).
STORAGE_PATHS = {
    "cache": "django_idempotency.storage.CacheStorage",
    "cache-tombstones": "tests.testapp.storages.TombstoneCacheStorage",
}


@pytest.fixture(params=["database", pytest.param("cache", marks=pytest.mark.redis)])
def storage_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once with DatabaseStorage and once with CacheStorage on real Redis."""
    if request.param == "database":
        yield request.param
        return
    from django.test import override_settings

    request.getfixturevalue("redis_cache")
    with override_settings(
        IDEMPOTENCY_STORAGE=STORAGE_PATHS[request.param],
        IDEMPOTENCY_CACHE_ALIAS="idempotency",
    ):
        yield request.param


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own behind the ``idempotency`` alias; it may be stopped."""
    from django.test import override_settings

    from tests.redis_servers import RedisServer, caches_with, redis_cache_config

    server = RedisServer()
    server.start()
    try:
        with override_settings(CACHES=caches_with(redis_cache_config(server.port))):
            yield server
    finally:
        server.stop()
