"""The payment provider's webhook: verify the signature first, then handle each event once.

The provider (Stripe-style) signs ``<timestamp>.<body>`` with HMAC-SHA256 under a secret it
shares with us and sends ``Provider-Signature: t=<timestamp>,v1=<hex digest>``; it delivers
an event again whenever it saw no 2xx, and sometimes when it did. The signature is checked
before anything else: deduplicating first would let a forged event that carries a real event
id take that id, and the real delivery would then be answered as a duplicate, never handled.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from django_idempotency.decorators import idempotency_exempt
from django_idempotency.functions import CallInProgress, CallMismatch, once
from example_project.shop.models import Order, Payment

SIGNATURE_HEADER = "Provider-Signature"
#: A signed delivery older than this is refused, so a captured one cannot be replayed later.
TOLERANCE_SECONDS = 300


class InvalidSignature(Exception):
    """The delivery is not signed by the provider (or too old)."""


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """Return the signature header the provider sends for ``body``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(body: bytes, header: str, secret: str, *, now: float | None = None) -> dict[str, Any]:
    """Return the event ``body`` holds if ``header`` signs it; raise ``InvalidSignature``.

    The header may carry several ``v1`` signatures (one per secret while the provider rolls
    its secret over): one that matches is enough. Only one timestamp is accepted.
    """
    timestamps, signatures = [], []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value.encode("utf-8", "surrogateescape"))
    if len(timestamps) != 1 or not timestamps[0].isascii() or not timestamps[0].isdigit():
        raise InvalidSignature("not one timestamp")
    timestamp = int(timestamps[0])
    expected = sign(body, secret, timestamp).split("v1=", 1)[1].encode()
    # Every signature compared, in constant time each: which one matched is not told.
    if not any([hmac.compare_digest(expected, signature) for signature in signatures]):
        raise InvalidSignature("the signature does not match")
    if abs((time.time() if now is None else now) - timestamp) > TOLERANCE_SECONDS:
        raise InvalidSignature("the delivery is too old")
    event = json.loads(body)
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
        raise InvalidSignature("a signed body that is not an event")
    return event


def handle_event(event: dict[str, Any]) -> dict[str, Any]:
    """Act on one event: a succeeded payment is recorded against its order."""
    if event.get("type") != "payment.succeeded":
        return {"ignored": event.get("type")}
    charge = event["data"]["object"]
    order = Order.objects.filter(pk=int(charge["metadata"]["order"])).first()
    if order is None:
        return {"ignored": "no such order"}
    payment = Payment.objects.create(order=order, amount=charge["amount"])
    return {"payment": payment.pk}


@csrf_exempt  # the provider signs its deliveries; it holds no CSRF token
@transaction.non_atomic_requests  # once() claims outside any transaction (ATOMIC_REQUESTS)
@idempotency_exempt  # deduplicated by the event's id below, not by an Idempotency-Key header
@require_POST
def payment_events(request: HttpRequest) -> JsonResponse:
    """Receive the provider's events: 200 for each verified event, handled once by its id."""
    try:
        event = verify(
            request.body, request.headers.get(SIGNATURE_HEADER, ""), settings.WEBHOOK_SECRET
        )
    except (InvalidSignature, ValueError):
        return JsonResponse({"detail": "invalid signature"}, status=400)
    try:
        # Handled once per event id; a redelivery gets the stored result, the handler's
        # writes and the stored result commit together (DatabaseStorage).
        result = once(event["id"], handle_event, event, scope="provider-events", wait_timeout=5)
    except CallInProgress as exc:
        # The first delivery still runs: not 2xx, so the provider delivers again later.
        response = JsonResponse({"detail": "in progress"}, status=409)
        response["Retry-After"] = str(max(1, int(exc.retry_after.total_seconds())))
        return response
    except CallMismatch:
        return JsonResponse({"detail": "this event id came before with another body"}, status=422)
    return JsonResponse({"received": event["id"], **result})
