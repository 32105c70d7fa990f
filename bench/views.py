"""One small, realistic view, bare and behind each entry point."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import generics, serializers

from bench.models import Payment
from django_idempotency.mixins import IdempotencyMixin
from django_idempotency.storage import DatabaseStorage


class PaymentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Payment
        fields = ["id", "amount", "currency", "reference", "created_at"]


class PaymentCreate(generics.CreateAPIView):
    """Validate a small serializer and insert one row: the bare DRF view."""

    queryset = Payment.objects.all()
    serializer_class = PaymentSerializer


class IdempotentPaymentCreate(IdempotencyMixin, PaymentCreate):
    """The same view, with keys in the database (the default storage)."""


class CachedIdempotentPaymentCreate(IdempotencyMixin, PaymentCreate):
    """The same view, with keys in Redis."""

    idempotency_storage = "django_idempotency.storage.CacheStorage"


@csrf_exempt
def create_payment(request: HttpRequest) -> JsonResponse:
    """Validate a small JSON body and insert one row: the plain Django view."""
    try:
        data = json.loads(request.body)
        amount = Decimal(data["amount"])
        currency = str(data["currency"])
        reference = str(data["reference"])
    except (ValueError, KeyError, TypeError, InvalidOperation):
        return JsonResponse({"detail": "invalid body"}, status=400)
    if len(currency) != 3 or len(reference) > 64:
        return JsonResponse({"detail": "invalid body"}, status=400)
    payment = Payment.objects.create(amount=amount, currency=currency, reference=reference)
    return JsonResponse(
        {
            "id": payment.pk,
            "amount": str(payment.amount),
            "currency": payment.currency,
            "reference": payment.reference,
            "created_at": payment.created_at.isoformat(),
        },
        status=201,
    )


class UnflushedClaimsStorage(DatabaseStorage):
    """``DatabaseStorage`` whose claims do not wait for their WAL flush (``--unflushed-claims``)."""

    flush_claims = False
