"""Stored response bodies sealed by an encryptor, and Fernet's as the one this app ships.

With ``IDEMPOTENCY_ENCRYPTOR`` set, the engine seals every body before the storage sees it
and unseals it for a replay, so neither the database row, the Redis hash nor a backup holds
it in clear (docs/data-protection.md). A sealed body starts with
``SEALED``; a body stored before encryption was turned on does not, and is replayed as it is.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast, runtime_checkable

from django.core.exceptions import ImproperlyConfigured
from django.views.decorators.debug import sensitive_variables

#: What a sealed body starts with: the envelope's name and version, between NUL bytes, which
#: no text body (JSON, HTML, XML) begins with.
SEALED = b"\x00django-idempotency:sealed:1\x00"


@runtime_checkable
class Encryptor(Protocol):
    """Encrypt a stored body and decrypt it again; ``decrypt`` raises when it cannot."""

    def encrypt(self, data: bytes) -> bytes: ...

    def decrypt(self, token: bytes) -> bytes: ...


class Unreadable(Exception):
    """A sealed body that the configured encryptor (or its absence) cannot open."""


def seal(body: bytes, encryptor: Encryptor | None, *, scope: str, key: str) -> bytes:
    """Return ``body`` as stored for (scope, key): sealed by ``encryptor``, or as it is.

    The sealed text starts with a digest of the record's scope and key, so a sealed body
    copied into another record (by someone who can write to the store but not read it)
    does not open there.
    """
    if encryptor is None:
        return body
    return SEALED + encryptor.encrypt(_record_digest(scope, key) + body)


def unseal(stored: bytes, encryptor: Encryptor | None, *, scope: str, key: str) -> bytes:
    """Return the body ``stored`` holds; ``Unreadable`` when it is sealed and cannot be opened.

    Any body without the envelope is returned as it is: bodies stored before encryption
    was turned on keep replaying. A sealed body made for another record is unreadable.
    """
    if not stored.startswith(SEALED):
        return stored
    if encryptor is None:
        raise Unreadable("the body is sealed and IDEMPOTENCY_ENCRYPTOR is not set")
    try:
        opened = encryptor.decrypt(stored[len(SEALED) :])
    except Exception as exc:  # an encryptor's own error, whatever its library raises
        raise Unreadable(f"the body's seal cannot be opened ({type(exc).__name__})") from exc
    digest = _record_digest(scope, key)
    if not hmac.compare_digest(opened[: len(digest)], digest):
        raise Unreadable("the body was sealed for another record")
    return opened[len(digest) :]


def _record_digest(scope: str, key: str) -> bytes:
    # Length-prefixed, as the Redis names are: ("a", "bc") and ("ab", "c") stay apart.
    return hashlib.sha256(f"{len(scope)}:{scope}{key}".encode("utf-8", "surrogateescape")).digest()


def is_sealed(stored: bytes) -> bool:
    """Whether ``stored`` is a sealed body."""
    return stored.startswith(SEALED)


class FernetEncryptor:
    """Fernet (AES-128-CBC with HMAC-SHA256) from ``cryptography``, with key rotation.

    The keys are ``IDEMPOTENCY_ENCRYPTION_KEYS`` unless given: the first one seals, every one
    opens (``MultiFernet``), so a new key goes first and an old one is dropped once the
    bodies it sealed have expired (``IDEMPOTENCY_TTL``). Needs the ``encryption`` extra.
    """

    # Django's error pages (DEBUG, AdminEmailHandler) list a frame's locals: never the keys.
    @sensitive_variables("keys", "key", "fernets")
    def __init__(self, keys: Sequence[str | bytes] | None = None) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:
            raise ImproperlyConfigured(
                "FernetEncryptor needs cryptography: pip install 'django-idempotency[encryption]'."
            ) from exc
        if keys is None:
            from django_idempotency.conf import idempotency_settings

            keys = idempotency_settings.ENCRYPTION_KEYS
        if not keys:
            raise ImproperlyConfigured(
                "IDEMPOTENCY_ENCRYPTION_KEYS is empty: FernetEncryptor needs at least one key "
                "(python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')."
            )
        fernets = []
        for position, key in enumerate(keys, start=1):
            try:
                fernets.append(Fernet(key))
            except (TypeError, ValueError):
                # Never the key itself: this message reaches logs.
                raise ImproperlyConfigured(
                    f"IDEMPOTENCY_ENCRYPTION_KEYS: key {position} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes)."
                ) from None
        self._fernet = MultiFernet(fernets)

    def encrypt(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt(self, token: bytes) -> bytes:
        return self._fernet.decrypt(token)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"  # never the keys


def build_encryptor(factory: str | Callable[[], Any] | None) -> Encryptor | None:
    """Return the encryptor ``IDEMPOTENCY_ENCRYPTOR`` names (a class or its path), built.

    ``None`` when unset. ``ImproperlyConfigured`` when it cannot be built, naming the
    setting and why, never a key.
    """
    if factory is None:
        return None
    if isinstance(factory, str):
        from django.utils.module_loading import import_string

        try:
            factory = cast("Callable[[], Any]", import_string(factory))
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"IDEMPOTENCY_ENCRYPTOR: cannot import {factory!r}."
            ) from exc
    try:
        encryptor = factory()
    except ImproperlyConfigured:
        raise
    except Exception as exc:  # a KMS that did not answer, say: a setting that cannot be used
        raise ImproperlyConfigured(
            f"IDEMPOTENCY_ENCRYPTOR: {factory!r} failed to build ({type(exc).__name__})."
        ) from exc
    if not isinstance(encryptor, Encryptor):
        raise ImproperlyConfigured(
            f"IDEMPOTENCY_ENCRYPTOR: {factory!r} does not build an encryptor "
            "(an object with encrypt(bytes) and decrypt(bytes))."
        )
    return encryptor
