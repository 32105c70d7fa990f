"""The system checks of ``CacheStorage``: the cache must be a shared, atomic, loud django-redis.

E101-E107 at start-up, W101/W102 (Redis may evict keys) on deploy; see docs/storage-cache.md.
Without the ``redis`` extra (no django-redis to import) they report E103, and only when
``CacheStorage`` is configured.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import pytest
from django.core.checks import registry, run_checks
from django.test import override_settings
from django_redis import get_redis_connection  # type: ignore[import-untyped]

from django_idempotency.checks_cache import check_cache_eviction_policy, check_cache_storage
from tests.redis_servers import RedisServer, caches_with, free_port, redis_cache_config

CACHE_STORAGE = {
    "IDEMPOTENCY_STORAGE": "django_idempotency.storage.CacheStorage",
    "IDEMPOTENCY_CACHE_ALIAS": "idempotency",
}


def check_ids(config: dict[str, Any] | None, **settings: Any) -> list[str]:
    overrides: dict[str, Any] = {**CACHE_STORAGE, **settings}
    if config is not None:
        overrides["CACHES"] = caches_with(config)
    with override_settings(**overrides):
        return [message.id or "" for message in check_cache_storage(None)]


def test_checks__healthy_django_redis_passes() -> None:
    assert check_ids(None) == []


def test_checks__silent_without_cache_storage() -> None:
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    storage = "django_idempotency.storage.DatabaseStorage"
    assert check_ids(locmem, IDEMPOTENCY_STORAGE=storage) == []


def test_checks__subclass_of_cache_storage_is_checked() -> None:
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    storage = "django_idempotency.storage.cache.CacheStorage"
    assert check_ids(locmem, IDEMPOTENCY_STORAGE=storage) == ["django_idempotency.E102"]


def test_checks__missing_alias_is_e101() -> None:
    assert check_ids(None, IDEMPOTENCY_CACHE_ALIAS="nowhere") == ["django_idempotency.E101"]


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.dummy.DummyCache",
        "django.core.cache.backends.locmem.LocMemCache",
        "django.core.cache.backends.filebased.FileBasedCache",
        "django.core.cache.backends.db.DatabaseCache",
    ],
)
def test_checks__cache_that_cannot_lock_is_e102(backend: str) -> None:
    assert check_ids({"BACKEND": backend, "LOCATION": "idempotency"}) == ["django_idempotency.E102"]


@pytest.mark.parametrize(
    "backend",
    [
        "django.core.cache.backends.redis.RedisCache",
        "django.core.cache.backends.memcached.PyMemcacheCache",
        "no.such.Backend",
    ],
)
def test_checks__cache_that_is_not_django_redis_is_e103(backend: str) -> None:
    config = {"BACKEND": backend, "LOCATION": "redis://127.0.0.1:6379/15"}
    assert check_ids(config) == ["django_idempotency.E103"]


def test_checks__ignore_exceptions_option_is_e104() -> None:
    config = redis_cache_config(free_port(), IGNORE_EXCEPTIONS=True)
    assert check_ids(config) == ["django_idempotency.E104"]


def test_checks__ignore_exceptions_global_setting_is_e104() -> None:
    config = redis_cache_config(free_port())
    assert check_ids(config, DJANGO_REDIS_IGNORE_EXCEPTIONS=True) == ["django_idempotency.E104"]


def test_checks__sharded_client_is_e105() -> None:
    config = redis_cache_config(free_port(), CLIENT_CLASS="django_redis.client.ShardClient")
    assert check_ids(config) == ["django_idempotency.E105"]


def sentinel_config(**options: Any) -> dict[str, Any]:
    # A service name of its own: django-redis keeps one pool per URL for the process.
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://service-{uuid.uuid4().hex}/0",
        "OPTIONS": {"CLIENT_CLASS": "django_redis.client.SentinelClient", **options},
    }


SENTINEL_FACTORY = "django_redis.pool.SentinelConnectionFactory"


def test_checks__a_sentinel_cache_passes_without_connecting() -> None:
    # No sentinel listens there: building the client opens no connection.
    config = sentinel_config(
        CONNECTION_FACTORY=SENTINEL_FACTORY, SENTINELS=[("127.0.0.1", free_port())]
    )
    assert check_ids(config) == []


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"SENTINELS": [("127.0.0.1", 26379)]}, id="without-the-factory"),
        pytest.param({"CONNECTION_FACTORY": SENTINEL_FACTORY}, id="without-sentinels"),
    ],
)
def test_checks__a_sentinel_client_django_redis_refuses_is_e107(options: dict[str, Any]) -> None:
    assert check_ids(sentinel_config(**options)) == ["django_idempotency.E107"]


def test_checks__e107_carries_django_redis_words_and_the_fix() -> None:
    with override_settings(**CACHE_STORAGE, CACHES=caches_with(sentinel_config())):
        (message,) = check_cache_storage(None)
    assert "is not configured correctly" in message.msg
    assert "SentinelConnectionFactory" in (message.hint or "")


def test_checks__decode_responses_is_e106() -> None:
    config = redis_cache_config(free_port(), CONNECTION_POOL_KWARGS={"decode_responses": True})
    assert check_ids(config) == ["django_idempotency.E106"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"IDEMPOTENCY_CACHE_ALIAS": "nowhere"},
        {"CACHES": caches_with({"BACKEND": "django.core.cache.backends.dummy.DummyCache"})},
        {"CACHES": caches_with({"BACKEND": "no.such.Backend"})},
        {"CACHES": caches_with(redis_cache_config(free_port(), IGNORE_EXCEPTIONS=True))},
    ],
)
def test_checks__messages_are_sentences_with_hints(overrides: dict[str, Any]) -> None:
    with override_settings(**{**CACHE_STORAGE, **overrides}):
        (message,) = check_cache_storage(None)

    assert message.msg[0].isupper()
    assert message.msg.endswith(".")
    assert message.hint


def test_checks__eviction_check_runs_only_on_deploy() -> None:
    assert check_cache_storage in registry.registry.get_checks(include_deployment_checks=False)
    assert check_cache_eviction_policy not in registry.registry.get_checks(
        include_deployment_checks=False
    )
    assert check_cache_eviction_policy in registry.registry.get_checks(
        include_deployment_checks=True
    )


def deploy_check_ids() -> list[str]:
    with override_settings(**CACHE_STORAGE):
        return [message.id or "" for message in check_cache_eviction_policy(None)]


@pytest.mark.redis
@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "volatile-ttl"])
def test_checks__evicting_redis_is_w101(private_redis: RedisServer, policy: str) -> None:
    get_redis_connection("idempotency").config_set("maxmemory-policy", policy)

    assert deploy_check_ids() == ["django_idempotency.W101"]


@pytest.mark.redis
def test_checks__noeviction_redis_passes(private_redis: RedisServer) -> None:
    get_redis_connection("idempotency").config_set("maxmemory-policy", "noeviction")

    assert deploy_check_ids() == []


def test_checks__unreachable_redis_is_w102() -> None:
    with override_settings(CACHES=caches_with(redis_cache_config(free_port()))):
        assert deploy_check_ids() == ["django_idempotency.W102"]


def test_checks__eviction_check_skips_misconfigured_cache() -> None:
    locmem = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    with override_settings(CACHES=caches_with(locmem)):
        assert deploy_check_ids() == []


@pytest.fixture
def without_django_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make django-redis unimportable, as in an install without the ``redis`` extra."""
    for name in ("django_redis", "django_redis.cache"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "django_idempotency.storage.cache", raising=False)


@pytest.mark.django_db  # run_checks() reads the database (see test_checks.py)
@pytest.mark.usefixtures("without_django_redis")
def test_checks__without_the_redis_extra_report_e103_for_cache_storage_only() -> None:
    # Django's own Redis cache, which is not django-redis.
    caches = caches_with({"BACKEND": "django.core.cache.backends.redis.RedisCache"})

    def registered_ids(**settings: Any) -> list[str]:
        with override_settings(CACHES=caches, **settings):
            return [m.id for m in run_checks(tags=["caches"]) if m.id]

    # DatabaseStorage: the cache checks have nothing to say.
    assert registered_ids() == []
    assert registered_ids(**CACHE_STORAGE) == ["django_idempotency.E103"]
