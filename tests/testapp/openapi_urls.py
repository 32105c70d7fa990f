"""The URLconf the OpenAPI tests generate a schema for (tests/test_openapi.py)."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from django_idempotency.decorators import idempotency_exempt
from tests.testapp import openapi_views, views

router = DefaultRouter()
router.register("orders", views.OrderViewSet)
router.register("receipts", openapi_views.ReceiptViewSet, basename="receipt")

urlpatterns = [
    path("api/", include(router.urls)),
    path("drf/behave/", views.DRFBehaveView.as_view()),
    path("drf/required/", views.DRFRequiredView.as_view()),
    path("drf-without-mixin/behave/", views.DRFWithoutMixinView.as_view()),
    path(
        "drf-without-mixin/exempt/",
        idempotency_exempt(views.DRFWithoutMixinView.as_view()),
    ),
    path("invoices/", openapi_views.create_invoice),
    path("lenient/", openapi_views.LenientView.as_view()),
    path("organisation/", openapi_views.OrganisationView.as_view()),
    path("webhook/", openapi_views.WebhookView.as_view()),
    path("transfers/", openapi_views.TransferView.as_view()),
]
