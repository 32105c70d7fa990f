"""The two ways to protect a view: the DRF mixin, and the decorator behind the middleware."""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from rest_framework import viewsets
from rest_framework.authtoken.models import Token

from django_idempotency.decorators import idempotent
from django_idempotency.mixins import IdempotencyMixin
from example_project.shop.models import Order, Payment
from example_project.shop.serializers import OrderSerializer

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal("100000000")  # max_digits=10, decimal_places=2


class OrderViewSet(IdempotencyMixin, viewsets.ModelViewSet):
    """Orders: every POST and PATCH must carry an Idempotency-Key."""

    queryset = Order.objects.all()
    serializer_class = OrderSerializer
    idempotency_required = True


def parse_amount(value: object) -> Decimal | None:
    """Return a positive amount with at most two decimals that fits the column, else None."""
    try:
        amount = Decimal(str(value))
        if Decimal(0) < amount < MAX_AMOUNT and amount == amount.quantize(CENT):
            return amount
    except InvalidOperation:
        pass
    return None


def payment_as_dict(payment: Payment) -> dict[str, Any]:
    """Return the JSON shape of a payment."""
    return {
        "id": payment.pk,
        "order": payment.order_id,
        "amount": str(payment.amount),
        "created_at": payment.created_at.isoformat(),
    }


def token_user(request: HttpRequest) -> Any:
    """Return the user whose API token the ``Authorization: Token …`` header carries, or None."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme != "Token" or not key:
        return None
    token = Token.objects.select_related("user").filter(key=key).first()
    return token.user if token is not None else None


@csrf_exempt  # an API called with an Idempotency-Key, not a browser form
@idempotent(required=True)  # keys are scoped by the Authorization header's hash
@require_POST
def create_payment(request: HttpRequest) -> JsonResponse:
    """Record a payment for an order from ``{"order": id, "amount": "9.99"}``."""
    if token_user(request) is None:
        # Refusals are never stored: the caller may retry the same key with credentials.
        return JsonResponse({"detail": "Send Authorization: Token <your API token>."}, status=401)
    try:
        data = json.loads(request.body)
        order = Order.objects.filter(pk=int(data["order"])).first()
        amount = parse_amount(data["amount"])
    except (ValueError, TypeError, KeyError):
        return JsonResponse({"detail": 'Send {"order": <id>, "amount": "9.99"}.'}, status=400)
    if order is None:
        return JsonResponse({"detail": "No such order."}, status=400)
    if amount is None:
        return JsonResponse({"detail": "amount must be a positive sum in cents."}, status=400)
    payment = Payment.objects.create(order=order, amount=amount)
    response = JsonResponse(payment_as_dict(payment), status=201)
    response["Location"] = reverse("payment-detail", args=[payment.pk])
    return response


@require_GET
def payment_detail(request: HttpRequest, pk: int) -> JsonResponse:
    """Show one payment."""
    return JsonResponse(payment_as_dict(get_object_or_404(Payment, pk=pk)))
