"""Middleware the system-check tests list in MIDDLEWARE."""

from __future__ import annotations

from django.middleware.gzip import GZipMiddleware


class ProjectGZipMiddleware(GZipMiddleware):
    """A project's own GZipMiddleware, as some tune ``max_random_bytes``."""

    max_random_bytes = 50
