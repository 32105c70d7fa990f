from __future__ import annotations

from django.db import transaction
from django.urls import path

from bench import views

urlpatterns = [
    path("drf/bare/", views.PaymentCreate.as_view()),
    # What ATOMIC_REQUESTS = True does to every view: one transaction around the whole view.
    path("drf/bare-atomic/", transaction.atomic(views.PaymentCreate.as_view())),
    path("drf/mixin/", views.IdempotentPaymentCreate.as_view()),
    path("drf/mixin-redis/", views.CachedIdempotentPaymentCreate.as_view()),
    path("plain/", views.create_payment),
]
