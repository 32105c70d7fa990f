"""Settings for the example orders/payments API.

SQLite (``example_project/db.sqlite3``) by default; ``EXAMPLE_DATABASE=postgres`` switches to
PostgreSQL at ``PGHOST`` (default 127.0.0.1), database ``idempotency_example``.
Not for production: DEBUG is on and the secret key is public.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-project-not-secret"
#: The secret the payment provider signs its webhook deliveries with (shop/webhooks.py).
WEBHOOK_SECRET = os.environ.get("EXAMPLE_WEBHOOK_SECRET", "whsec-example-not-secret")
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "/static/"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_idempotency",
    "example_project.shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_idempotency.middleware.IdempotencyMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

EXAMPLE_DATABASE = os.environ.get("EXAMPLE_DATABASE", "sqlite")

DATABASES: dict[str, dict[str, Any]]
if EXAMPLE_DATABASE == "postgres":
    # Create it once with: createdb -h 127.0.0.1 -U postgres idempotency_example
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("EXAMPLE_PGDATABASE", "idempotency_example"),
            "USER": os.environ.get("PGUSER", "postgres"),
            "PASSWORD": os.environ.get("PGPASSWORD", ""),
            "HOST": os.environ.get("PGHOST", "127.0.0.1"),
            "PORT": os.environ.get("PGPORT", "5432"),
        }
    }
elif EXAMPLE_DATABASE == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get(
                "EXAMPLE_SQLITE_PATH", str(BASE_DIR / "example_project" / "db.sqlite3")
            ),
            "OPTIONS": {
                # Writers take the lock when their transaction starts and queue for up to
                # `timeout` seconds, so concurrent requests wait instead of failing.
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL;",
                "timeout": 20,
            },
        }
    }
else:
    raise RuntimeError(f"EXAMPLE_DATABASE must be sqlite or postgres, not {EXAMPLE_DATABASE!r}")

REST_FRAMEWORK: dict[str, Any] = {
    # A payments API knows its callers: each key belongs to the user who sent it, and a
    # request without credentials is refused before any key is looked at.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
}

# With the openapi extra (drf-spectacular) installed, /api/schema/ serves the OpenAPI schema,
# which documents Idempotency-Key where the app handles it (docs/openapi.md).
HAS_SPECTACULAR = importlib.util.find_spec("drf_spectacular") is not None
if HAS_SPECTACULAR:
    INSTALLED_APPS.append("drf_spectacular")
    REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = (
        "django_idempotency.contrib.drf_spectacular.IdempotencyAutoSchema"
    )
    SPECTACULAR_SETTINGS = {"TITLE": "Example shop", "VERSION": "1.0.0"}

# With the metrics extra (prometheus-client) installed, every outcome is counted and /metrics/
# serves the counters (docs/metrics.md).
HAS_PROMETHEUS = importlib.util.find_spec("prometheus_client") is not None
IDEMPOTENCY_METRICS = HAS_PROMETHEUS

# Stored responses encrypted when keys are given, the first sealing (docs/data-protection.md):
#   IDEMPOTENCY_ENCRYPTION_KEYS=$(python -c "from cryptography.fernet import Fernet;
#   print(Fernet.generate_key().decode())") python manage.py runserver
if os.environ.get("IDEMPOTENCY_ENCRYPTION_KEYS"):
    IDEMPOTENCY_ENCRYPTOR = "django_idempotency.encryption.FernetEncryptor"
    IDEMPOTENCY_ENCRYPTION_KEYS = os.environ["IDEMPOTENCY_ENCRYPTION_KEYS"].split(",")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
    # Django's own handlers would print each django.request line a second time.
    "loggers": {"django": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}
