"""Whose key it is: the principal a record belongs to (DESIGN §2.2)."""

from __future__ import annotations

import hashlib

from django.http import HttpRequest


def default_scope(request: HttpRequest) -> str:
    """Return the scope of the request's principal.

    An authenticated user is scoped by model and primary key. A request that carries
    credentials the current layer did not authenticate (say, a DRF token seen by the
    middleware) is scoped by a hash of those credentials, so such users never share a
    scope. Everything else shares the ``anonymous`` scope.
    """
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        return f"user:{user._meta.label_lower}:{user.pk}"
    credentials = request.headers.get("Authorization")
    if credentials:
        return "credentials:" + hashlib.sha256(credentials.encode("latin-1", "replace")).hexdigest()
    return "anonymous"
