"""Configuration at its edges: what the checks leave to each other, quiet commands, odd stores.

Through the system checks (with and without the ``redis`` extra), ``@idempotent`` where a view
is decorated, a mixin hook that returns a bad value at request time, the purge command at
verbosity 0, ``CacheStorage`` on a missing alias or a sharded django-redis client, and the
database clock of the backends the suite has no server for (MySQL/MariaDB, Oracle).
"""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from io import StringIO
from types import SimpleNamespace
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.http import HttpRequest, HttpResponse
from django.test import Client, override_settings
from django.urls import path
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency.clock import now_sql, to_datetime
from django_idempotency.decorators import idempotent
from django_idempotency.mixins import IdempotencyMixin
from django_idempotency.storage import CacheStorage
from tests.factories import IdempotencyKeyFactory
from tests.redis_servers import caches_with, free_port, redis_cache_config
from tests.settings import MIDDLEWARE
from tests.testapp.models import Execution
from tests.testapp.views import behave

# run_checks() reads the database on Django 6.1 (see tests/test_checks.py).
pytestmark = pytest.mark.django_db


def ids(**settings: Any) -> list[str]:
    with override_settings(**settings):
        return [m.id for m in run_checks() if m.id and m.id.startswith("django_idempotency")]


# System checks: each problem reported once, by the check that owns it


def test_storage_that_is_not_a_path__is_e001_only() -> None:
    found = ids(IDEMPOTENCY_STORAGE=123)

    assert "django_idempotency.E001" in found
    assert "django_idempotency.E002" not in found


def test_duration_given_as_a_bool__is_e001() -> None:
    assert "django_idempotency.E001" in ids(IDEMPOTENCY_TTL=True)


def test_required_everywhere__no_w001_without_the_middleware() -> None:
    without = [m for m in MIDDLEWARE if not m.startswith("django_idempotency")]

    assert "django_idempotency.W001" not in ids(IDEMPOTENCY_REQUIRED=True, MIDDLEWARE=without)


def test_required_everywhere__bad_methods_are_e001_not_w001() -> None:
    found = ids(IDEMPOTENCY_REQUIRED=True, IDEMPOTENCY_METHODS="POST")

    assert "django_idempotency.E001" in found
    assert "django_idempotency.W001" not in found


# Per-view options, where the view is decorated


def test_decorator__unknown_option_far_from_any_name_points_to_the_docs() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    with pytest.raises(ImproperlyConfigured, match=r"see docs/settings\.md"):
        idempotent(zzzzzz=1)(view)


# The purge command, quiet


def test_purge__verbosity_0_prints_nothing(settings: Any) -> None:
    IdempotencyKeyFactory.create(expired=True)
    out = StringIO()

    call_command("purge_idempotency_keys", "--dry-run", verbosity=0, stdout=out)
    settings.IDEMPOTENCY_STORAGE = "django_idempotency.storage.CacheStorage"
    call_command("purge_idempotency_keys", verbosity=0, stdout=out)

    assert out.getvalue() == ""


# CacheStorage on a client it cannot use


def test_cache_storage__sharded_client_is_refused_at_first_use() -> None:
    # Building the sharded client opens no connection: no Redis server is needed.
    config = redis_cache_config(free_port(), CLIENT_CLASS="django_redis.client.ShardClient")

    with (
        override_settings(CACHES=caches_with(config)),
        pytest.raises(ImproperlyConfigured, match="the sharded client is not supported"),
    ):
        CacheStorage("idempotency").get("scope", "k")


def test_cache_storage__alias_missing_from_caches_names_the_setting() -> None:
    expected = "IDEMPOTENCY_CACHE_ALIAS is 'nowhere', but CACHES has no cache"
    with pytest.raises(ImproperlyConfigured, match=re.escape(expected)):
        CacheStorage("nowhere").get("scope", "k")


# Without the redis extra


@pytest.fixture
def without_django_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make django-redis unimportable, as in an install without the ``redis`` extra."""
    for name in ("django_redis", "django_redis.cache"):
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "django_idempotency.storage.cache")


def cache_check_ids(**settings: Any) -> list[str]:
    with override_settings(**settings):
        return [m.id for m in run_checks(tags=["caches"]) if m.id]


@pytest.mark.usefixtures("without_django_redis")
def test_cache_checks__without_the_redis_extra() -> None:
    # Django's own Redis cache, which is not django-redis.
    caches = caches_with({"BACKEND": "django.core.cache.backends.redis.RedisCache"})

    # DatabaseStorage: the cache checks have nothing to say.
    assert cache_check_ids(CACHES=caches) == []
    assert cache_check_ids(
        IDEMPOTENCY_STORAGE="django_idempotency.storage.CacheStorage",
        IDEMPOTENCY_CACHE_ALIAS="idempotency",
        CACHES=caches,
    ) == ["django_idempotency.E103"]


# The database clock of other backends


@pytest.mark.parametrize(
    ("vendor", "use_tz", "expected"),
    [
        ("mysql", True, "UTC_TIMESTAMP(6)"),
        ("mysql", False, None),
        ("oracle", True, "SYS_EXTRACT_UTC(SYSTIMESTAMP)"),
        ("oracle", False, None),
        ("sqlite", True, None),
    ],
)
def test_clock__server_time_where_the_backend_can_tell_it(
    settings: Any, vendor: str, use_tz: bool, expected: str | None
) -> None:
    settings.USE_TZ = use_tz

    assert now_sql(SimpleNamespace(vendor=vendor)) == expected  # type: ignore[arg-type]


def test_clock__naive_utc_from_mysql_reads_as_aware() -> None:
    assert to_datetime(datetime(2026, 1, 2, 3, 4, 5)) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_clock__anything_but_a_datetime_is_refused() -> None:
    with pytest.raises(TypeError, match="expected a datetime"):
        to_datetime(1767322800)


def test_clock__text_from_sqlite_reads_as_aware() -> None:
    assert to_datetime("2026-01-02 03:04:05.5") == datetime(2026, 1, 2, 3, 4, 5, 500000, tzinfo=UTC)


# A hook that returns a bad value at request time: the layer fails closed


class BadMethodsHookView(IdempotencyMixin, APIView):
    def get_idempotency_methods(self) -> Any:
        return "POST"  # a string, not a list

    def get(self, request: Request) -> HttpResponse:
        return HttpResponse("page")

    def post(self, request: Request) -> HttpResponse:
        return behave({}, "bad-methods")


class BadRequiredHookView(IdempotencyMixin, APIView):
    def get_idempotency_required(self) -> Any:
        return "yes"

    def get(self, request: Request) -> HttpResponse:
        return HttpResponse("page")

    def post(self, request: Request) -> HttpResponse:
        return behave({}, "bad-required")


urlpatterns = [
    path("bad-methods/", BadMethodsHookView.as_view()),
    path("bad-required/", BadRequiredHookView.as_view()),
]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    ("url", "method", "headers", "message"),
    [
        # Which methods were meant is unknown: a keyed PUT counts as covered.
        ("/bad-methods/", "put", {"Idempotency-Key": "k"}, "methods='POST'"),
        # Whether keys are required is unknown: an unkeyed POST counts as keyed.
        ("/bad-required/", "post", {}, "required='yes'"),
    ],
)
def test_hook_returning_a_bad_value__refuses_unsafe_requests_and_serves_safe_ones(
    url: str, method: str, headers: dict[str, str], message: str
) -> None:
    client = Client()

    with pytest.raises(ImproperlyConfigured, match=message):
        getattr(client, method)(url, "{}", "application/json", headers=headers)
    assert client.get(url).content == b"page"
    assert not Execution.objects.exists()
