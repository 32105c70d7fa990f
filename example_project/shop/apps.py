"""The example shop: orders (DRF) and payments (a plain Django view)."""

from __future__ import annotations

from django.apps import AppConfig


class ShopConfig(AppConfig):
    """Configure the shop app."""

    name = "example_project.shop"
    label = "shop"
    default_auto_field = "django.db.models.BigAutoField"
