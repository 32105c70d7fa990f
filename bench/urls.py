from __future__ import annotations

from django.urls import path

from bench import views

urlpatterns = [
    path("drf/bare/", views.PaymentCreate.as_view()),
    path("drf/mixin/", views.IdempotentPaymentCreate.as_view()),
    path("drf/mixin-redis/", views.CachedIdempotentPaymentCreate.as_view()),
    path("plain/", views.create_payment),
]
