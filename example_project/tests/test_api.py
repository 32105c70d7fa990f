"""The example shop's own tests, written with the app's test kit (docs/testing.md).

Run them with ``python -m pytest example_project --ds=example_project.settings`` (the
project's test suite does, in tests/test_example_project.py). Pytest tests use the
``idempotency`` fixture of the kit's plugin; ``WebhookTests`` shows the kit from Django's
``TestCase``.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client, TestCase
from rest_framework.authtoken.models import Token

from django_idempotency.testing import new_key
from example_project.shop.models import Order, Payment
from example_project.shop.webhooks import SIGNATURE_HEADER, sign

ORDER = {"item": "espresso beans", "quantity": 2, "amount": "18.50"}


def token_client(username: str = "alice") -> Client:
    """A client that sends ``username``'s API token, as the shop's customers do."""
    user, _ = get_user_model().objects.get_or_create(username=username)
    token, _ = Token.objects.get_or_create(user=user)
    return Client(headers={"Authorization": f"Token {token.key}"})


@pytest.mark.django_db
def test_an_order_retried__is_replayed_and_created_once(idempotency: ModuleType) -> None:
    first, _replay = idempotency.assert_replays(token_client(), "/api/orders/", ORDER)

    assert first.status_code == 201
    assert Order.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/api/orders/", "/payments/"])
def test_orders_and_payments__require_a_key(idempotency: ModuleType, path: str) -> None:
    idempotency.assert_requires_key(token_client(), path, ORDER)


@pytest.mark.django_db
def test_a_payment_with_another_amount_under_the_same_key__is_refused(
    idempotency: ModuleType,
) -> None:
    client, key = token_client(), new_key()
    order = Order.objects.create(item="tea", amount="4.20")
    paid = idempotency.post(client, "/payments/", {"order": order.pk, "amount": "4.20"}, key=key)
    other = idempotency.post(client, "/payments/", {"order": order.pk, "amount": "1.00"}, key=key)

    assert (paid.status_code, other.status_code) == (201, 422)
    assert idempotency.error_code(other) == "idempotency_key_mismatch"
    assert Payment.objects.count() == 1


@pytest.mark.django_db
def test_another_customer_with_the_same_key__gets_an_order_of_their_own(
    idempotency: ModuleType,
) -> None:
    key = new_key()
    alice = idempotency.post(token_client("alice"), "/api/orders/", ORDER, key=key)
    bob = idempotency.post(token_client("bob"), "/api/orders/", ORDER, key=key)

    assert (alice.status_code, bob.status_code) == (201, 201)
    assert bob.content != alice.content
    assert Order.objects.count() == 2


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
    reason="concurrent writers need a server database (EXAMPLE_DATABASE=postgres)",
)
@pytest.mark.django_db(transaction=True)
def test_ten_duplicates_at_once__create_one_order(idempotency: ModuleType) -> None:
    burst = idempotency.fire_duplicates("/api/orders/", ORDER, n=10, client_factory=token_client)

    assert burst.runs == 1
    assert set(burst.statuses) <= {201, 409}
    assert Order.objects.count() == 1


class WebhookTests(TestCase):
    """The provider's webhook (shop/webhooks.py), tested from Django's TestCase."""

    def deliver(self, body: bytes, secret: str = settings.WEBHOOK_SECRET) -> Any:
        signature = sign(body, secret, int(time.time()))
        return self.client.post(
            "/webhooks/payments/",
            body,
            content_type="application/json",
            headers={SIGNATURE_HEADER: signature},
        )

    def event(self, order: Order) -> bytes:
        return (
            b'{"id":"evt_1","type":"payment.succeeded","data":{"object":'
            b'{"amount":"18.50","metadata":{"order":%d}}}}' % order.pk
        )

    def test_a_redelivered_event__is_answered_200_and_handled_once(self) -> None:
        body = self.event(Order.objects.create(item="tea", amount="18.50"))

        first, again = self.deliver(body), self.deliver(body)

        assert (first.status_code, again.status_code) == (200, 200)
        assert first.content == again.content
        assert Payment.objects.count() == 1

    def test_a_forged_event_with_a_real_id__is_refused_and_cannot_take_the_id(self) -> None:
        body = self.event(Order.objects.create(item="tea", amount="18.50"))

        forged = self.deliver(body, secret="guessed")
        real = self.deliver(body)

        assert (forged.status_code, real.status_code) == (400, 200)
        assert Payment.objects.count() == 1

    def test_a_signature_header_of_any_shape__is_a_400_never_a_500(self) -> None:
        body = self.event(Order.objects.create(item="tea", amount="18.50"))
        now = int(time.time())
        good = sign(body, settings.WEBHOOK_SECRET, now)
        for header in ["", "t=,v1=", f"t={now},v1=\u00e9", f"t=x{now},v1=ab", f"{good},t={now}"]:
            response = self.client.post(
                "/webhooks/payments/",
                body,
                content_type="application/json",
                headers={SIGNATURE_HEADER: header},
            )
            assert response.status_code == 400, header
        assert Payment.objects.count() == 0

    def test_a_header_with_a_signature_per_secret__is_accepted_during_a_secret_rollover(
        self,
    ) -> None:
        body = self.event(Order.objects.create(item="tea", amount="18.50"))
        now = int(time.time())
        old = sign(body, "the-old-secret", now).split("v1=")[1]
        header = f"{sign(body, settings.WEBHOOK_SECRET, now)},v1={old}"

        response = self.client.post(
            "/webhooks/payments/",
            body,
            content_type="application/json",
            headers={SIGNATURE_HEADER: header},
        )
        assert response.status_code == 200
