"""The OpenAPI schema at its edges: durations as a reader wants them, a view's own 409."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import generics
from rest_framework.request import Request
from rest_framework.response import Response

from django_idempotency.mixins import IdempotencyMixin
from tests.testapp import openapi_views


@pytest.fixture(autouse=True)
def schema_settings(settings: Any) -> None:
    settings.ROOT_URLCONF = "tests.testapp.openapi_urls"
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_SCHEMA_CLASS": "django_idempotency.contrib.drf_spectacular.IdempotencyAutoSchema",
    }


def generate(**generator_kwargs: Any) -> dict[str, Any]:
    schema: dict[str, Any] = SchemaGenerator(**generator_kwargs).get_schema(  # type: ignore[no-untyped-call]
        request=None, public=True
    )
    return schema


def key_description(ttl: timedelta, settings: Any) -> str:
    settings.IDEMPOTENCY_TTL = ttl
    operation = generate()["paths"]["/drf/required/"]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    return str(parameter["description"])


@pytest.mark.parametrize(
    ("ttl", "said"),
    [
        (timedelta(seconds=1.5), "1.5 seconds"),
        (timedelta(seconds=45), "45 seconds"),
        (timedelta(seconds=1), "1 second"),
        (timedelta(minutes=90), "90 minutes"),
        (timedelta(days=1), "24 hours"),
        (timedelta(days=3), "3 days"),
    ],
)
def test_key_description__says_how_long_a_key_is_kept(
    settings: Any, ttl: timedelta, said: str
) -> None:
    assert f"A key is kept for {said} after" in key_description(ttl, settings)


def test_error_responses__merged_into_a_409_the_view_declares_without_content() -> None:
    class ReservationView(IdempotencyMixin, generics.CreateAPIView[Any]):
        serializer_class = openapi_views.InvoiceSerializer
        idempotency_required = True

        @extend_schema(
            responses={
                201: openapi_views.InvoiceSerializer,
                409: OpenApiResponse(description="The seat is taken."),
            }
        )
        def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
            return super().post(request, *args, **kwargs)

    schema = generate(patterns=[path("reservations/", ReservationView.as_view())])
    response = schema["paths"]["/reservations/"]["post"]["responses"]["409"]

    assert response["description"].startswith("The seat is taken.\n\n")
    assert "idempotency_key_in_progress" in response["description"]
    assert "Retry-After" in response["headers"]
    assert response["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IdempotencyErrorDetail"
    }
