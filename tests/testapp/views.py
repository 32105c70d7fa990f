"""Views the tests drive: one behaviour, behind each entry point."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from django.db import transaction
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import authentication, exceptions, permissions, serializers, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_idempotency.decorators import idempotency_exempt, idempotent
from django_idempotency.mixins import IdempotencyMixin
from tests.testapp.models import Execution, Order

#: Events a view named by its payload's ``hold`` waits on, set by the test that sent it.
HOLDS: dict[str, threading.Event] = {}
#: A held view goes on after this long, so a broken test fails instead of hanging.
HOLD_LIMIT = 60.0


def behave(payload: dict[str, Any], label: str) -> HttpResponse:
    """Record one execution, then answer as the payload asks.

    Payload keys: ``status``, ``sleep`` (seconds), ``hold`` (the name of an event in
    ``HOLDS`` to wait for), ``raise`` (bool), ``binary`` (bool),
    ``stream`` (bool), ``file`` (bool), ``size`` (body bytes), ``set_cookie`` (bool),
    ``location`` (str), ``rollback`` (bool: mark the transaction for rollback).
    """
    Execution.objects.create(label=label)
    if payload.get("sleep"):
        time.sleep(float(payload["sleep"]))
    if payload.get("hold"):
        HOLDS[payload["hold"]].wait(HOLD_LIMIT)
    if payload.get("raise"):
        raise RuntimeError("the view failed")
    status = int(payload.get("status", 201))
    if payload.get("stream"):
        return StreamingHttpResponse(iter([b"chunk-1 ", b"chunk-2"]), status=status)  # type: ignore[return-value]
    if payload.get("file"):
        import io

        return FileResponse(io.BytesIO(b"file body"), status=status)  # type: ignore[return-value]
    if payload.get("binary"):
        body = bytes(range(256)) * 4
        response = HttpResponse(body, status=status, content_type="application/octet-stream")
    elif payload.get("size"):
        response = HttpResponse(
            b"x" * int(payload["size"]), status=status, content_type="text/plain"
        )
    else:
        executions = Execution.objects.filter(label=label).count()
        body = json.dumps({"label": label, "executions": executions, "echo": payload}).encode()
        response = HttpResponse(body, status=status, content_type="application/json")
    if payload.get("location"):
        response["Location"] = payload["location"]
    response["X-Not-Allow-Listed"] = "dropped on replay"
    response["ETag"] = '"v1"'
    if payload.get("set_cookie"):
        response.set_cookie("session-ish", "secret")
    if payload.get("rollback"):
        transaction.set_rollback(True)
    return response


def _payload(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _label(request: HttpRequest, payload: dict[str, Any]) -> str:
    return str(payload.get("label") or request.path)


@csrf_exempt
def plain_behave(request: HttpRequest) -> HttpResponse:
    payload = _payload(request)
    return behave(payload, _label(request, payload))


@csrf_exempt
@idempotent(required=True, methods=["POST", "PATCH", "DELETE"])
def decorated_behave(request: HttpRequest) -> HttpResponse:
    payload = _payload(request)
    return behave(payload, _label(request, payload))


@csrf_exempt
@idempotent(required=True, on_conflict="wait", wait_timeout=10)
def decorated_wait(request: HttpRequest) -> HttpResponse:
    payload = _payload(request)
    return behave(payload, _label(request, payload))


@csrf_exempt
@idempotent(required=True, anonymous="shared")
def decorated_shared_anonymous(request: HttpRequest) -> HttpResponse:
    """A sign-up form's API, say, where anonymous callers knowingly share one scope."""
    payload = _payload(request)
    return behave(payload, _label(request, payload))


@idempotent(required=True)
def form_behave(request: HttpRequest) -> HttpResponse:
    """A form view under CSRF protection: the CSRF check reads the multipart body first."""
    upload = request.FILES.get("file")
    return behave({"label": request.POST.get("label", "form")}, f"form:{upload and upload.size}")


@csrf_exempt
@idempotency_exempt
def exempt_behave(request: HttpRequest) -> HttpResponse:
    payload = _payload(request)
    return behave(payload, _label(request, payload))


@csrf_exempt
async def async_behave(request: HttpRequest) -> HttpResponse:
    from asgiref.sync import sync_to_async

    payload = _payload(request)
    return await sync_to_async(behave)(payload, _label(request, payload))


@csrf_exempt
@idempotent(required=True, methods=["POST", "PATCH", "DELETE"])
async def async_decorated_behave(request: HttpRequest) -> HttpResponse:
    """``decorated_behave``, as a coroutine: the middleware's async path with per-view options."""
    from asgiref.sync import sync_to_async

    payload = _payload(request)
    return await sync_to_async(behave)(payload, _label(request, payload))


class DRFBehaveView(IdempotencyMixin, APIView):
    idempotency_methods = ["POST", "PATCH", "DELETE"]

    def post(self, request: Request) -> HttpResponse:
        payload = dict(request.data) if isinstance(request.data, dict) else {}
        if payload.get("validation_error"):
            Execution.objects.create(label=_label(request, payload))
            raise serializers.ValidationError({"item": ["bad"]})
        if payload.get("unrenderable"):
            Execution.objects.create(label=_label(request, payload))
            return Response({"oops": object()}, status=201)  # JSONRenderer fails on it
        return behave(payload, _label(request, payload))

    patch = post
    delete = post

    def get(self, request: Request) -> HttpResponse:
        return behave({"status": 200}, request.path)


class DRFRequiredView(DRFBehaveView):
    idempotency_required = True


class DRFSharedAnonymousView(DRFBehaveView):
    idempotency_required = True
    idempotency_anonymous = "shared"


class DRFWaitView(DRFBehaveView):
    idempotency_required = True
    idempotency_on_conflict = "wait"
    idempotency_wait_timeout = 10


class DRFWithoutMixinView(APIView):
    """A DRF view without the mixin: the middleware leaves it alone."""

    def post(self, request: Request) -> HttpResponse:
        payload = dict(request.data) if isinstance(request.data, dict) else {}
        return behave(payload, _label(request, payload))


class OrderSerializer(serializers.ModelSerializer[Order]):
    class Meta:
        model = Order
        fields = ["id", "item", "quantity", "created_at"]


class OrderViewSet(IdempotencyMixin, viewsets.ModelViewSet[Order]):
    queryset = Order.objects.all()
    serializer_class = OrderSerializer
    idempotency_required = True

    def perform_create(self, serializer: serializers.BaseSerializer[Order]) -> None:
        with transaction.atomic():
            serializer.save()
            Execution.objects.create(label="order")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().create(request, *args, **kwargs)
        response["Location"] = f"/api/orders/{response.data['id']}/"
        return response


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authenticate by a DRF token sent in ``X-Api-Key``, as many APIs do."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        return _token_user(request.headers.get("X-Api-Key"))


class CookieTokenAuthentication(authentication.BaseAuthentication):
    """Authenticate by a DRF token kept in an ``api_token`` cookie."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        return _token_user(request.COOKIES.get("api_token"))


def _token_user(key: str | None) -> tuple[Any, Any] | None:
    if not key:
        return None
    token = Token.objects.select_related("user").filter(key=key).first()
    if token is None:
        raise exceptions.AuthenticationFailed("Unknown API key.")
    return token.user, token


class ApiKeyWithoutMixinView(APIView):
    """A payments-like DRF view whose callers send an API key header or cookie; no mixin."""

    authentication_classes = [ApiKeyAuthentication, CookieTokenAuthentication]
    permission_classes = [permissions.IsAuthenticated]

    def post(self, request: Request) -> HttpResponse:
        payload = dict(request.data) if isinstance(request.data, dict) else {}
        # The caller's name is in the label, so the body says whose response it is.
        return behave(payload, f"{_label(request, payload)}@{request.user.get_username()}")


class ApiKeyView(IdempotencyMixin, ApiKeyWithoutMixinView):
    """The same view protected by the mixin, after DRF authenticated the caller."""

    idempotency_required = True
