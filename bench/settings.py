"""Settings for ``python -m bench.requests``: one database per process, chosen by environment.

``BENCH_DATABASE`` is ``sqlite`` (a file at ``BENCH_SQLITE_PATH``) or ``postgres`` (database
``BENCH_PG_NAME`` at ``PGHOST``; ``BENCH_PG_SYNCHRONOUS_COMMIT``, default ``on``). Connections
are persistent (``CONN_MAX_AGE = None``), as in a latency-sensitive deployment: a connect per
request would hide the library's cost.
"""

from __future__ import annotations

import os

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "bench.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ.get("BENCH_DATABASE", "sqlite") == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("BENCH_PG_NAME", "idempotency_bench"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
            "CONN_MAX_AGE": None,
            # ``off`` shows what the ratios become when a commit does not wait for the disk.
            "OPTIONS": {
                "options": "-c synchronous_commit="
                + os.environ.get("BENCH_PG_SYNCHRONOUS_COMMIT", "on")
            },
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("BENCH_SQLITE_PATH", "bench.sqlite3"),
            "CONN_MAX_AGE": None,
        }
    }

CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "idempotency": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"),
        "KEY_PREFIX": os.environ.get("BENCH_REDIS_PREFIX", "bench"),
    },
}

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "rest_framework",
    "django_idempotency",
    "bench",
]

# The bare handler runs with no middleware at all; bench.requests builds a second handler
# with IdempotencyMiddleware alone, so each ratio isolates this library's cost.
MIDDLEWARE: list[str] = []

REST_FRAMEWORK = {
    # No authentication: it would add the same work to bare and idempotent requests alike
    # and so flatter the ratios.
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}

IDEMPOTENCY_CACHE_ALIAS = "idempotency"
if os.environ.get("BENCH_UNFLUSHED_CLAIMS") == "1":
    # ``--unflushed-claims``: PostgreSQL claims that do not wait for their WAL flush.
    IDEMPOTENCY_STORAGE = "bench.views.UnflushedClaimsStorage"
