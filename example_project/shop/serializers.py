"""DRF serializers of the example shop."""

from __future__ import annotations

from rest_framework import serializers

from example_project.shop.models import Order


class OrderSerializer(serializers.ModelSerializer):
    """Read and write orders."""

    class Meta:
        model = Order
        fields = ["id", "item", "quantity", "amount", "created_at"]
        read_only_fields = ["id", "created_at"]
