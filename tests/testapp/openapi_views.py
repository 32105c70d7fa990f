"""Views whose OpenAPI schema the tests read: one per way a view states its policy."""

from __future__ import annotations

from typing import Any

from django.utils.decorators import method_decorator
from rest_framework import generics, serializers, status, viewsets
from rest_framework.decorators import api_view, schema
from rest_framework.request import Request
from rest_framework.response import Response

from django_idempotency.contrib.drf_spectacular import IdempotencyAutoSchema
from django_idempotency.decorators import idempotency_exempt, idempotent
from django_idempotency.mixins import IdempotencyMixin
from tests.testapp.models import Order
from tests.testapp.views import OrderSerializer


class InvoiceSerializer(serializers.Serializer[Any]):
    amount = serializers.DecimalField(max_digits=10, decimal_places=2)


@api_view(["POST"])
# @api_view reads DEFAULT_SCHEMA_CLASS when it decorates; the test settings leave DRF's.
@schema(IdempotencyAutoSchema())
def create_invoice(request: Request) -> Response:
    """A DRF function view without the mixin, which the middleware leaves alone."""
    return Response(request.data, status=status.HTTP_201_CREATED)


class ReceiptViewSet(IdempotencyMixin, viewsets.ModelViewSet[Order]):
    """Keys decided per action by a hook: required to create, optional to edit."""

    queryset = Order.objects.all()
    serializer_class = OrderSerializer
    idempotency_methods = ["POST", "PATCH", "PUT"]

    def get_idempotency_required(self) -> bool:
        return self.action == "create"


class LenientView(IdempotencyMixin, generics.CreateAPIView[Any]):
    """Stripe-like mismatches, fail-open, and no shared transaction."""

    serializer_class = InvoiceSerializer
    idempotency_mismatch_status = 409
    idempotency_fail_open = True
    idempotency_atomic = False


class OrganisationView(IdempotencyMixin, generics.CreateAPIView[Any]):
    """A hook that needs a real user: schema generation has only an anonymous one."""

    serializer_class = InvoiceSerializer
    idempotency_required = True

    def get_idempotency_required(self) -> bool:
        # Deliberately fails for the anonymous user schema generation has.
        return bool(self.request.user.organisation.requires_keys)  # type: ignore[union-attr]


@method_decorator(idempotency_exempt, name="dispatch")
class WebhookView(generics.CreateAPIView[Any]):
    """Exempt through its class, so every view function as_view() makes is exempt."""

    serializer_class = InvoiceSerializer


@method_decorator(idempotent(required=True), name="dispatch")
class TransferView(generics.CreateAPIView[Any]):
    """Per-view options through its class, without the mixin."""

    serializer_class = InvoiceSerializer

    def perform_create(self, serializer: serializers.BaseSerializer[Any]) -> None:
        """Store nothing: the response echoes the validated invoice."""
