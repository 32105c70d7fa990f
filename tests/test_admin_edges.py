"""The admin's date hierarchy above the day level, and previews of headers in any order."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import IdempotencyKeyFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:django_idempotency_idempotencykey_changelist"


def test_changelist__date_hierarchy_offers_each_year_between_first_and_last(
    admin_client: Client,
) -> None:
    IdempotencyKeyFactory.create(created_at=datetime(2023, 6, 15, 12, tzinfo=UTC))
    IdempotencyKeyFactory.create(created_at=datetime(2025, 6, 15, 12, tzinfo=UTC))

    content = admin_client.get(reverse(CHANGELIST)).content.decode()

    for year in (2023, 2024, 2025):
        assert f"created_at__year={year}" in content
    assert "created_at__year=2026" not in content


def test_changelist__date_hierarchy_offers_each_month_of_the_chosen_year(
    admin_client: Client,
) -> None:
    IdempotencyKeyFactory.create(created_at=datetime(2025, 3, 5, 12, tzinfo=UTC))
    IdempotencyKeyFactory.create(created_at=datetime(2025, 5, 5, 12, tzinfo=UTC))
    IdempotencyKeyFactory.create(created_at=datetime(2024, 11, 5, 12, tzinfo=UTC))

    response = admin_client.get(reverse(CHANGELIST), {"created_at__year": "2025"})
    content = response.content.decode()

    for month in (3, 4, 5):
        assert f"created_at__month={month}" in content
    assert "created_at__month=11" not in content


def test_detail__pretty_prints_json_whose_content_type_is_not_the_first_header(
    admin_client: Client,
) -> None:
    record = IdempotencyKeyFactory.create(
        response_headers=[["Location", "/orders/7/"], ["Content-Type", "application/json"]],
        response_body=b'{"id":7}',
    )
    url = reverse("admin:django_idempotency_idempotencykey_change", args=[record.pk])

    content = admin_client.get(url).content.decode()

    assert "{\n  &quot;id&quot;: 7\n}" in content
