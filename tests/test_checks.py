"""System checks report misconfiguration with an ID and a hint, once, by the check that owns it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.checks import Error, run_checks
from django.test import override_settings

from tests.settings import MIDDLEWARE
from tests.testapp.models import Order

# Since Django 6.1, run_checks() hands every database alias to the model checks, and the
# JSONField check asks each connection's features: the database is read, as by manage.py check.
pytestmark = pytest.mark.django_db


def ids(**kwargs: Any) -> list[str]:
    return [message.id for message in run_checks(**kwargs) if message.id]


def test_checks__pass_on_the_test_settings() -> None:
    messages = [m for m in run_checks() if m.id and m.id.startswith("django_idempotency")]

    # The test app keeps two DRF views without the mixin on purpose, to prove they are left alone.
    assert [m.id for m in messages] == ["django_idempotency.W002"]
    assert "tests.testapp.views.DRFWithoutMixinView" in messages[0].msg
    assert "tests.testapp.views.ApiKeyWithoutMixinView" in messages[0].msg


def test_drf_views_without_mixin__are_named_unless_exempt_or_read_only() -> None:
    from django.urls import path
    from rest_framework import viewsets
    from rest_framework.views import APIView

    from django_idempotency.decorators import idempotency_exempt
    from tests.testapp import views

    class ReadOnly(APIView):
        def get(self, request: Any) -> Any: ...

    class Catalogue(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
        queryset = Order.objects.all()

    urlconf = type(
        "urlconf",
        (),
        {
            "urlpatterns": [
                path("a/", views.DRFWithoutMixinView.as_view()),
                path("b/", idempotency_exempt(views.ApiKeyWithoutMixinView.as_view())),
                path("c/", ReadOnly.as_view()),
                path("d/", Catalogue.as_view({"get": "list"})),
                path("e/", views.DRFRequiredView.as_view()),
                path("f/", views.OrderViewSet.as_view({"post": "create"})),
            ]
        },
    )
    with override_settings(ROOT_URLCONF=urlconf):
        warnings = [m for m in run_checks() if m.id == "django_idempotency.W002"]
    with override_settings(ROOT_URLCONF=urlconf, MIDDLEWARE=[]):
        without_middleware = [m for m in run_checks() if m.id == "django_idempotency.W002"]

    assert len(warnings) == 1
    assert "1 DRF view(s)" in warnings[0].msg
    assert "tests.testapp.views.DRFWithoutMixinView" in warnings[0].msg
    assert without_middleware == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("IDEMPOTENCY_TTL", "24h"),
        ("IDEMPOTENCY_TTL", True),  # a bool is an int to Python, never a duration
        ("IDEMPOTENCY_LEASE", timedelta(0)),
        ("IDEMPOTENCY_LEASE", -5),
        ("IDEMPOTENCY_METHODS", "POST"),
        ("IDEMPOTENCY_METHODS", []),
        ("IDEMPOTENCY_METHODS", ["POST", "get"]),
        ("IDEMPOTENCY_REQUIRED", "yes"),
        ("IDEMPOTENCY_ON_CONFLICT", "block"),
        ("IDEMPOTENCY_MISMATCH_STATUS", 500),
        ("IDEMPOTENCY_MAX_RESPONSE_SIZE", True),
        ("IDEMPOTENCY_DATABASE", "nowhere"),
        ("IDEMPOTENCY_SCOPE", 42),
        ("IDEMPOTENCY_SCOPE", "nowhere.scope"),
        ("IDEMPOTENCY_SCOPE", "tests.testapp.broken_scope.scope"),
        ("IDEMPOTENCY_FINGERPRINT", "django_idempotency.fingerprints.missing"),
    ],
)
def test_settings_check__reports_bad_type_or_range_as_e001(name: str, value: Any) -> None:
    with override_settings(**{name: value}):
        messages = [m for m in run_checks() if m.id == "django_idempotency.E001"]

    assert len(messages) == 1
    assert name in messages[0].msg
    assert messages[0].hint
    assert isinstance(messages[0], Error)


@pytest.mark.parametrize("value", [60, 0.5, timedelta(minutes=2)])
def test_settings_check__accepts_seconds_or_timedelta(value: Any) -> None:
    with override_settings(IDEMPOTENCY_LEASE=value):
        assert "django_idempotency.E001" not in ids()


@pytest.mark.parametrize("path", ["nowhere.Storage", "django_idempotency.conf.IdempotencySettings"])
def test_storage_check__reports_unusable_storage_as_e002(path: str) -> None:
    with override_settings(IDEMPOTENCY_STORAGE=path):
        assert "django_idempotency.E002" in ids()


def test_storage_check__a_storage_that_is_not_a_path_is_e001_only() -> None:
    with override_settings(IDEMPOTENCY_STORAGE=123):
        found = ids()

    assert "django_idempotency.E001" in found
    assert "django_idempotency.E002" not in found


def test_middleware_check__reports_middleware_before_authentication_as_e003() -> None:
    reordered = [m for m in MIDDLEWARE if "IdempotencyMiddleware" not in m]
    reordered.insert(0, "django_idempotency.middleware.IdempotencyMiddleware")

    with override_settings(MIDDLEWARE=reordered):
        assert "django_idempotency.E003" in ids()


def test_decorated_views_check__reports_missing_middleware_as_e004() -> None:
    without = [m for m in MIDDLEWARE if "IdempotencyMiddleware" not in m]

    with override_settings(MIDDLEWARE=without):
        messages = [m for m in run_checks() if m.id == "django_idempotency.E004"]

    assert len(messages) == 1
    assert "tests.testapp.views.decorated_behave" in messages[0].msg


def test_required_check__warns_that_a_global_requirement_covers_forms_as_w001() -> None:
    with override_settings(IDEMPOTENCY_REQUIRED=True):
        assert "django_idempotency.W001" in ids()
    assert "django_idempotency.W001" not in ids()


def test_required_check__no_w001_without_the_middleware() -> None:
    without = [m for m in MIDDLEWARE if not m.startswith("django_idempotency")]

    with override_settings(IDEMPOTENCY_REQUIRED=True, MIDDLEWARE=without):
        assert "django_idempotency.W001" not in ids()


def test_required_check__bad_methods_are_e001_not_w001() -> None:
    with override_settings(IDEMPOTENCY_REQUIRED=True, IDEMPOTENCY_METHODS="POST"):
        found = ids()

    assert "django_idempotency.E001" in found
    assert "django_idempotency.W001" not in found


def test_mixin__after_the_drf_view_class_is_refused_at_class_creation() -> None:
    from django.core.exceptions import ImproperlyConfigured
    from rest_framework.views import APIView

    from django_idempotency.mixins import IdempotencyMixin

    with pytest.raises(ImproperlyConfigured, match="before its DRF view class"):
        type("Backwards", (APIView, IdempotencyMixin), {})


@pytest.mark.parametrize(
    "options",
    [
        {"methods": ["GET"]},
        {"on_conflict": "Wait"},
        {"mismatch_status": 418},
        {"lease": "60"},
        {"requried": True},
    ],
)
def test_idempotent__refuses_bad_options_when_the_view_is_defined(options: dict[str, Any]) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from django_idempotency.decorators import idempotent

    with pytest.raises(ImproperlyConfigured, match="@idempotent on"):

        @idempotent(**options)
        def view(request: Any) -> None: ...


def test_mixin__refuses_bad_class_attributes_when_the_class_is_defined() -> None:
    from django.core.exceptions import ImproperlyConfigured
    from rest_framework.views import APIView

    from django_idempotency.mixins import IdempotencyMixin

    with pytest.raises(ImproperlyConfigured, match="on_conflict='block'"):
        type("Bad", (IdempotencyMixin, APIView), {"idempotency_on_conflict": "block"})


GZIP_MIDDLEWARE = "django.middleware.gzip.GZipMiddleware"
IDEMPOTENCY_MIDDLEWARE = "django_idempotency.middleware.IdempotencyMiddleware"


@pytest.mark.parametrize(
    "compressor", [GZIP_MIDDLEWARE, "tests.testapp.middleware.ProjectGZipMiddleware"]
)
def test_compression_check__warns_of_gzip_inside_the_middleware_as_w004(compressor: str) -> None:
    with override_settings(MIDDLEWARE=[*MIDDLEWARE, compressor]):
        messages = [m for m in run_checks() if m.id == "django_idempotency.W004"]

    assert len(messages) == 1
    assert compressor in messages[0].msg
    assert IDEMPOTENCY_MIDDLEWARE in (messages[0].hint or "")


@pytest.mark.parametrize(
    "middleware",
    [
        [GZIP_MIDDLEWARE, *MIDDLEWARE],
        ["tests.testapp.middleware.ProjectGZipMiddleware", *MIDDLEWARE],
        [m for m in MIDDLEWARE if "IdempotencyMiddleware" not in m] + [GZIP_MIDDLEWARE],
        [*MIDDLEWARE, "tests.testapp.middleware.Missing", "nowhere.Middleware"],
    ],
    ids=["gzip-outside", "subclass-outside", "no-idempotency-middleware", "unimportable"],
)
def test_compression_check__is_silent_for_any_other_order(middleware: list[str]) -> None:
    with override_settings(MIDDLEWARE=middleware):
        assert "django_idempotency.W004" not in ids()
