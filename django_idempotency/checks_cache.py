"""System checks for ``CacheStorage``: the cache must be a shared, atomic, loud django-redis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from django_idempotency.conf import idempotency_settings

if TYPE_CHECKING:
    from redis import Redis

_CACHE_STORAGE_PATHS = frozenset(
    {"django_idempotency.storage.CacheStorage", "django_idempotency.storage.cache.CacheStorage"}
)

# Each keeps its data per process or takes no lock across processes, so two workers
# could both claim one key (DESIGN §2.1).
_LOCK_INCAPABLE_BACKENDS = (
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.filebased.FileBasedCache",
    "django.core.cache.backends.db.DatabaseCache",
)

_DJANGO_REDIS_BACKEND = "django_redis.cache.RedisCache"


def is_cache_storage_selected() -> bool:
    """Return whether ``IDEMPOTENCY_STORAGE`` names ``CacheStorage`` or a subclass."""
    try:
        path = idempotency_settings.STORAGE
    except ImproperlyConfigured:
        return False  # a bad IDEMPOTENCY_STORAGE is E001's to report
    if path in _CACHE_STORAGE_PATHS:
        return True
    try:
        storage_class = import_string(path)
    except (ImportError, ImproperlyConfigured):
        # An unimportable IDEMPOTENCY_STORAGE is the core checks' to report.
        return False
    try:
        from django_idempotency.storage.cache import CacheStorage
    except ImproperlyConfigured:
        return False
    return isinstance(storage_class, type) and issubclass(storage_class, CacheStorage)


@register(Tags.caches)
def check_cache_storage(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Report a cache alias that cannot hold idempotency keys safely."""
    if not is_cache_storage_selected():
        return []
    alias = idempotency_settings.CACHE_ALIAS
    caches: Mapping[str, Any] = settings.CACHES  # typed by whichever settings module is read
    config = caches.get(alias)
    if config is None:
        return [
            Error(
                f"IDEMPOTENCY_CACHE_ALIAS is {alias!r}, but CACHES has no cache by that name.",
                hint="Add that cache to CACHES, or point IDEMPOTENCY_CACHE_ALIAS at a "
                "django-redis cache that exists.",
                id="django_idempotency.E101",
            )
        ]
    backend_path = config.get("BACKEND", "")
    try:
        backend = import_string(backend_path)
    except ImportError:
        backend = None
    if backend is not None and any(
        issubclass(backend, import_string(path)) for path in _LOCK_INCAPABLE_BACKENDS
    ):
        return [
            Error(
                f"The cache {alias!r} ({backend_path}) cannot serve as a shared atomic lock, "
                "so two workers could run the same request.",
                hint="Point IDEMPOTENCY_CACHE_ALIAS at a django-redis cache "
                f"({_DJANGO_REDIS_BACKEND}), or use DatabaseStorage.",
                id="django_idempotency.E102",
            )
        ]
    if backend is None or not _is_django_redis(backend):
        return [
            Error(
                f"CacheStorage needs a django-redis cache, but the cache {alias!r} uses "
                f"{backend_path or 'no BACKEND'}.",
                hint=f"Install django-idempotency[redis] and set BACKEND to "
                f"{_DJANGO_REDIS_BACKEND}, or use DatabaseStorage.",
                id="django_idempotency.E103",
            )
        ]
    return _check_django_redis_options(alias, config)


def _is_django_redis(backend: type) -> bool:
    try:
        from django_redis.cache import RedisCache  # type: ignore[import-untyped]
    except ImportError:
        return False
    return issubclass(backend, RedisCache)


def _redis_connection(alias: str) -> Redis:
    from django_redis import get_redis_connection  # type: ignore[import-untyped]

    client: Redis = get_redis_connection(alias)
    return client


def _check_django_redis_options(alias: str, config: dict[str, Any]) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    options = config.get("OPTIONS", {})
    ignores = options.get(
        "IGNORE_EXCEPTIONS", getattr(settings, "DJANGO_REDIS_IGNORE_EXCEPTIONS", False)
    )
    if ignores:
        errors.append(
            Error(
                f"The cache {alias!r} ignores exceptions, which turns a Redis outage into "
                "silent misses that a lock cannot tell apart from free keys.",
                hint="Give idempotency its own django-redis cache alias without "
                "IGNORE_EXCEPTIONS (and without DJANGO_REDIS_IGNORE_EXCEPTIONS).",
                id="django_idempotency.E104",
            )
        )
    # Building the client opens no connection, so start-up never needs Redis.
    try:
        client = _redis_connection(alias)
    except NotImplementedError:
        errors.append(
            Error(
                f"The django-redis client of the cache {alias!r} ({options.get('CLIENT_CLASS')}) "
                "has no single connection to run the claim scripts on.",
                hint="Use django_redis.client.DefaultClient or SentinelClient; the sharded "
                "client is not supported.",
                id="django_idempotency.E105",
            )
        )
        return errors
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        errors.append(
            Error(
                f"The cache {alias!r} decodes Redis responses to text, which would corrupt "
                "stored response bodies.",
                hint="Remove decode_responses from the cache's URL and CONNECTION_POOL_KWARGS.",
                id="django_idempotency.E106",
            )
        )
    return errors


@register(Tags.caches, deploy=True)
def check_cache_eviction_policy(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Warn when Redis may evict idempotency records before they expire."""
    if not is_cache_storage_selected() or check_cache_storage(app_configs):
        return []
    from redis.exceptions import RedisError

    alias = idempotency_settings.CACHE_ALIAS
    try:
        # redis-py decodes CONFIG GET replies to str whatever decode_responses says.
        policy = str(_redis_connection(alias).config_get("maxmemory-policy")["maxmemory-policy"])
    except (RedisError, OSError, KeyError) as exc:
        # KeyError: some managed services answer CONFIG GET with nothing.
        return [
            Warning(
                f"Could not read the maxmemory-policy of the Redis behind the cache "
                f"{alias!r} ({type(exc).__name__}).",
                hint="Make sure that Redis runs with maxmemory-policy noeviction; managed "
                "services that forbid CONFIG GET show it in their console.",
                id="django_idempotency.W102",
            )
        ]
    if policy == "noeviction":
        return []
    # Every record carries a TTL, so volatile-* policies may evict them as well.
    return [
        Warning(
            f"The Redis behind the cache {alias!r} runs with maxmemory-policy {policy}, which "
            "may evict in-flight and completed idempotency keys and let a retry run twice.",
            hint="Set maxmemory-policy noeviction on a Redis dedicated to idempotency keys.",
            id="django_idempotency.W101",
        )
    ]
