"""Which storage a dotted path names, and which one the settings choose: one instance a path."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from django_idempotency.conf import idempotency_settings
from django_idempotency.storage.base import Storage

#: The storages this package ships, by class name, with every path they are importable as.
#: Known without importing them: ``CacheStorage`` needs django-redis to import.
BUILT_IN: dict[str, tuple[str, ...]] = {
    "DatabaseStorage": (
        "django_idempotency.storage.DatabaseStorage",
        "django_idempotency.storage.database.DatabaseStorage",
    ),
    "CacheStorage": (
        "django_idempotency.storage.CacheStorage",
        "django_idempotency.storage.cache.CacheStorage",
    ),
}

SETTING = "IDEMPOTENCY_STORAGE"


def storage_class(path: str, *, source: str = SETTING) -> type[Storage]:
    """Return the Storage class ``path`` names; ``ImproperlyConfigured`` names ``source``."""
    return _or_refuse(_find, path, source)


def get_storage(storage: str | Storage, *, source: str = SETTING) -> Storage:
    """Return the storage a dotted path names (one instance per path), or the instance given.

    A path that does not name a Storage class raises ``ImproperlyConfigured`` naming
    ``source``, where the path came from.
    """
    if isinstance(storage, Storage):
        return storage
    return _or_refuse(_instance, storage, source)


def configured_storage() -> Storage:
    """Return the storage ``IDEMPOTENCY_STORAGE`` names."""
    return get_storage(idempotency_settings.STORAGE)


def configured_storage_class() -> type[Storage]:
    """Return the class ``IDEMPOTENCY_STORAGE`` names; ``ImproperlyConfigured`` says why not."""
    return storage_class(idempotency_settings.STORAGE)


def is_configured(kind: Literal["DatabaseStorage", "CacheStorage"]) -> bool:
    """Whether ``IDEMPOTENCY_STORAGE`` names the built-in ``kind`` or a subclass of it.

    False when the setting is bad or names a class that cannot be imported, which the
    system check E002 (and every covered request) reports.
    """
    try:
        path = idempotency_settings.STORAGE
    except ImproperlyConfigured:
        return False
    if path in BUILT_IN[kind]:
        return True
    try:
        configured = storage_class(path)
        built_in = import_string(BUILT_IN[kind][0])
    except ImproperlyConfigured:  # includes CacheStorage without django-redis
        return False
    return issubclass(configured, built_in)


def is_in_use(kind: Literal["DatabaseStorage", "CacheStorage"]) -> bool:
    """Whether ``IDEMPOTENCY_STORAGE`` is ``kind``, or a ``MovingStorage`` with ``kind`` in it."""
    if is_configured(kind):
        return True
    from django_idempotency.storage.moving import MovingStorage

    try:
        configured = storage_class(idempotency_settings.STORAGE)
        built_in = import_string(BUILT_IN[kind][0])
    except ImproperlyConfigured:
        return False
    if not issubclass(configured, MovingStorage):
        return False
    for part in (configured.old, configured.new):
        if isinstance(part, Storage):
            if isinstance(part, built_in):
                return True
        elif part in BUILT_IN[kind] or _is_subclass(part, built_in):
            return True
    return False


def _is_subclass(path: str, built_in: type[Storage]) -> bool:
    try:
        return issubclass(storage_class(path), built_in)
    except ImproperlyConfigured:
        return False


T = TypeVar("T")


def _or_refuse(find: Callable[[str], T], path: str, source: str) -> T:
    try:
        return find(path)
    except _NotAStorage as problem:
        raise ImproperlyConfigured(f"{source} is {path!r}, which {problem}.") from problem


class _NotAStorage(Exception):
    """A dotted path that names no Storage class; the message says why, after "which"."""


def _find(path: str) -> type[Storage]:
    try:
        found = import_string(path)
    except ImportError as exc:
        raise _NotAStorage(f"cannot be imported ({exc})") from exc
    if not (isinstance(found, type) and issubclass(found, Storage)):
        raise _NotAStorage("is not a django_idempotency Storage subclass")
    return found


@functools.cache
def _instance(path: str) -> Storage:
    # Found once per path: a view with its own options builds its policy per request.
    return _find(path)()


@receiver(setting_changed)
def _forget_instances(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("IDEMPOTENCY_") or setting in {"CACHES", "DATABASES"}:
        _instance.cache_clear()
