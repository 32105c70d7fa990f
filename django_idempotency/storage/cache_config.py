"""What a cache must be for ``CacheStorage``: each problem found and worded once, with its ID.

The system checks (``checks_cache``) report every problem of the configured alias at
start-up; ``CacheStorage`` refuses to run on one (``redis_client``) with the same words, since
servers such as gunicorn run no checks. Nothing here imports django-redis until asked, so the
checks work, and say what is missing, without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import InvalidCacheBackendError, caches
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from redis import Redis

# Each keeps its data per process or takes no lock across processes, so two workers
# could both claim one key (DESIGN §2.1).
_LOCK_INCAPABLE_BACKENDS = (
    "django.core.cache.backends.dummy.DummyCache",
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.filebased.FileBasedCache",
    "django.core.cache.backends.db.DatabaseCache",
)

DJANGO_REDIS_BACKEND = "django_redis.cache.RedisCache"


@dataclass(frozen=True)
class CacheProblem:
    """One reason a cache cannot hold idempotency keys safely, as a check and an error say it.

    ``refuses_requests`` is False for a problem the storage itself is immune to (it uses the
    raw client), which the checks still report since other code on the cache is not.
    """

    id: str
    message: str
    hint: str
    refuses_requests: bool = True


class CacheMisconfigured(ImproperlyConfigured):
    """The cache cannot hold idempotency keys; the message is its problem's, with the hint."""

    def __init__(self, problem: CacheProblem) -> None:
        super().__init__(f"{problem.message} {problem.hint} ({problem.id})")
        self.problem = problem


def cache_problems(alias: str) -> list[CacheProblem]:
    """Return every problem of the cache ``alias`` for ``CacheStorage``, without connecting."""
    problems = _configuration_problems(alias)
    if any(problem.refuses_requests for problem in problems):
        return problems
    try:
        _raw_client(alias)
    except CacheMisconfigured as error:
        problems.append(error.problem)
    return problems


def redis_client(alias: str) -> Redis:
    """Return the raw redis-py client of ``alias``, which never swallows errors.

    Raise ``CacheMisconfigured`` with the first problem that makes the cache unsafe. Cheap
    enough for every request: the full diagnosis runs only when something is wrong.
    """
    redis_cache(alias)
    return _raw_client(alias)


def redis_cache(alias: str) -> Any:
    """Return the django-redis cache ``alias``; ``CacheMisconfigured`` when it is not one."""
    try:
        cache = caches[alias]
    except InvalidCacheBackendError:
        raise CacheMisconfigured(_first_problem(alias)) from None
    if not _is_django_redis(type(cache)):
        raise CacheMisconfigured(_first_problem(alias))
    return cache


def _first_problem(alias: str) -> CacheProblem:
    problems = _configuration_problems(alias)
    if problems:
        return problems[0]
    return CacheProblem(  # a django-redis cache configured, yet not what caches[alias] built
        "django_idempotency.E103",
        f"CacheStorage needs a django-redis cache, but the cache {alias!r} is not one.",
        f"Set its BACKEND to {DJANGO_REDIS_BACKEND}.",
    )


def _configuration_problems(alias: str) -> list[CacheProblem]:
    caches_setting: Mapping[str, Any] = settings.CACHES  # typed by whichever settings is read
    config = caches_setting.get(alias)
    if config is None:
        return [
            CacheProblem(
                "django_idempotency.E101",
                f"IDEMPOTENCY_CACHE_ALIAS is {alias!r}, but CACHES has no cache by that name.",
                "Add that cache to CACHES, or point IDEMPOTENCY_CACHE_ALIAS at a django-redis "
                "cache that exists.",
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
            CacheProblem(
                "django_idempotency.E102",
                f"The cache {alias!r} ({backend_path}) cannot serve as a shared atomic lock, "
                "so two workers could run the same request.",
                "Point IDEMPOTENCY_CACHE_ALIAS at a django-redis cache "
                f"({DJANGO_REDIS_BACKEND}), or use DatabaseStorage.",
            )
        ]
    if backend is None or not _is_django_redis(backend):
        return [
            CacheProblem(
                "django_idempotency.E103",
                f"CacheStorage needs a django-redis cache, but the cache {alias!r} uses "
                f"{backend_path or 'no BACKEND'}.",
                f"Install django-idempotency[redis] and set BACKEND to {DJANGO_REDIS_BACKEND}, "
                "or use DatabaseStorage.",
            )
        ]
    options = config.get("OPTIONS", {})
    ignores = options.get(
        "IGNORE_EXCEPTIONS", getattr(settings, "DJANGO_REDIS_IGNORE_EXCEPTIONS", False)
    )
    if not ignores:
        return []
    return [
        CacheProblem(
            "django_idempotency.E104",
            f"The cache {alias!r} ignores exceptions, which turns a Redis outage into silent "
            "misses that a lock cannot tell apart from free keys.",
            "Give idempotency its own django-redis cache alias without IGNORE_EXCEPTIONS "
            "(and without DJANGO_REDIS_IGNORE_EXCEPTIONS).",
            refuses_requests=False,
        )
    ]


def _raw_client(alias: str) -> Redis:
    from django_redis import get_redis_connection  # type: ignore[import-untyped]

    # Building the client opens no connection, so start-up never needs Redis.
    try:
        client: Redis = get_redis_connection(alias)
    except ImproperlyConfigured as error:
        # django-redis's own refusal, e.g. a SentinelClient without Sentinel's factory.
        raise CacheMisconfigured(
            CacheProblem(
                "django_idempotency.E107",
                f"The django-redis client of the cache {alias!r} cannot be built: {error}",
                "For Redis Sentinel, set the cache's OPTIONS to CLIENT_CLASS "
                "django_redis.client.SentinelClient, CONNECTION_FACTORY "
                "django_redis.pool.SentinelConnectionFactory and SENTINELS, a list of "
                "(host, port) pairs (docs/scale.md).",
            )
        ) from error
    except NotImplementedError:
        caches_setting: Mapping[str, Any] = settings.CACHES
        client_class = caches_setting[alias].get("OPTIONS", {}).get("CLIENT_CLASS")
        raise CacheMisconfigured(
            CacheProblem(
                "django_idempotency.E105",
                f"The django-redis client of the cache {alias!r} ({client_class}) has no "
                "single connection to run the claim scripts on.",
                "Use django_redis.client.DefaultClient or SentinelClient; the sharded client "
                "is not supported.",
            )
        ) from None
    if client.connection_pool.connection_kwargs.get("decode_responses"):
        raise CacheMisconfigured(
            CacheProblem(
                "django_idempotency.E106",
                f"The cache {alias!r} decodes Redis responses to text, which would corrupt "
                "stored response bodies.",
                "Remove decode_responses from the cache's URL and CONNECTION_POOL_KWARGS.",
            )
        )
    return client


def _is_django_redis(backend: type) -> bool:
    try:
        from django_redis.cache import RedisCache  # type: ignore[import-untyped]
    except ImportError:
        return False
    return issubclass(backend, RedisCache)
