"""Whose key it is: the principal a record belongs to (DESIGN §2.2)."""

from __future__ import annotations

import hashlib
from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest

from django_idempotency.exceptions import IdempotencyKeyWithoutPrincipal
from django_idempotency.options import AnonymousMode

#: The scope a scope function returns for a request without a principal; the policy's
#: ``anonymous`` mode then decides what such a request gets (``resolve_anonymous``).
ANONYMOUS = "anonymous"


def default_scope(request: HttpRequest) -> str:
    """Return the scope of the request's principal, or ``ANONYMOUS`` when it has none.

    An authenticated user is scoped by model and primary key. A request that carries an
    ``Authorization`` header the current layer did not authenticate (a plain view that reads
    it itself) is scoped by a hash of it, so such callers never share a scope.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        principal = _user_principal(user)
        if principal is not None:
            return principal
    credentials = request.headers.get("Authorization")
    if credentials:
        return credentials_scope(credentials)
    return ANONYMOUS


def credentials_scope(authorization: str) -> str:
    """Return the scope ``default_scope`` gives a request whose ``Authorization`` header is this.

    Such a request reached a view whose layer did not authenticate it (a plain view that
    reads a token itself): the header is all that tells its caller apart.
    """
    return "credentials:" + _digest(authorization)


def user_scope(pk: object) -> str:
    """Return the scope ``default_scope`` gives the ``AUTH_USER_MODEL`` user with key ``pk``.

    Raises ``ValidationError`` when ``pk`` is not a valid primary key for that model. The
    user need not exist any more: an erasure request may come after the account is gone.
    """
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    principal = _user_principal(user_model(pk=user_model._meta.pk.to_python(pk)))
    if principal is None:
        raise ValidationError("A primary key is required.", code="required")
    return principal


def resolve_anonymous(request: HttpRequest, mode: AnonymousMode) -> str:
    """Return the scope of a keyed request without a principal, or refuse it.

    ``session`` scopes it by its Django session, when it sends one that exists; ``shared``
    puts every such request in one scope (an explicit opt-in); otherwise the request is
    refused with ``IdempotencyKeyWithoutPrincipal``, never run unprotected.
    """
    if mode == "shared":
        return ANONYMOUS
    if mode == "session":
        session_key = _existing_session_key(request)
        if session_key is not None:
            return "session:" + _digest(session_key)
    raise IdempotencyKeyWithoutPrincipal


def _user_principal(user: Any) -> str | None:
    # A user without a primary key (a service principal some authentication class made up)
    # cannot be told apart from another of its kind: it is no principal at all.
    pk = getattr(user, "pk", None)
    if pk is None:
        return None
    meta = getattr(user, "_meta", None)
    label = (
        meta.label_lower if meta is not None else f"{type(user).__module__}.{type(user).__name__}"
    )
    return f"user:{label}:{pk}"


def _existing_session_key(request: HttpRequest) -> str | None:
    session = getattr(request, "session", None)
    if session is None or not session.session_key:
        return None
    # Loading the session drops a key that names no stored session, so a made-up cookie
    # never becomes a scope. The key itself is never stored: the admin shows scopes.
    session.keys()
    key = session.session_key
    return key if isinstance(key, str) and key else None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("latin-1", "replace")).hexdigest()
