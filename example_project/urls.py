"""URLs of the example project: the DRF orders API, the plain payments view, the webhook."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from rest_framework.routers import DefaultRouter

from example_project.shop import views, webhooks

router = DefaultRouter()
router.register("orders", views.OrderViewSet)

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(router.urls)),
    path("payments/", views.create_payment, name="payment-create"),
    path("payments/<int:pk>/", views.payment_detail, name="payment-detail"),
    path("webhooks/payments/", webhooks.payment_events, name="payment-events"),
]

if settings.HAS_SPECTACULAR:
    from drf_spectacular.views import SpectacularAPIView

    urlpatterns.append(path("api/schema/", SpectacularAPIView.as_view(), name="schema"))

if settings.HAS_PROMETHEUS:
    from django_idempotency.metrics import metrics_view

    # A real deployment serves this only to its Prometheus (docs/metrics.md).
    urlpatterns.append(path("metrics/", metrics_view, name="metrics"))
