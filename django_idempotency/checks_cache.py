"""System checks for ``CacheStorage``: the cache must be a shared, atomic, loud django-redis."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from django_idempotency.conf import idempotency_settings
from django_idempotency.storage.cache_config import cache_problems, redis_client
from django_idempotency.storage.registry import is_in_use


def is_cache_storage_selected() -> bool:
    """Return whether ``IDEMPOTENCY_STORAGE`` is ``CacheStorage``, or a move with it in it."""
    return is_in_use("CacheStorage")


@register(Tags.caches)
def check_cache_storage(
    app_configs: Sequence[AppConfig] | None, **kwargs: Any
) -> list[CheckMessage]:
    """Report a cache alias that cannot hold idempotency keys safely (E101-E106)."""
    if not is_cache_storage_selected():
        return []
    return [
        Error(problem.message, hint=problem.hint, id=problem.id)
        for problem in cache_problems(idempotency_settings.CACHE_ALIAS)
    ]


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
        policy = str(redis_client(alias).config_get("maxmemory-policy")["maxmemory-policy"])
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
