"""Views whose bodies may carry a content coding, one behind each entry point (issue 7, 4)."""

from __future__ import annotations

import gzip
import json
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.gzip import gzip_page
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency.decorators import idempotent
from django_idempotency.mixins import IdempotencyMixin
from tests.testapp.models import Execution

#: Makes every body long enough for GZipMiddleware, which leaves bodies under 200 bytes alone.
PADDING = "x" * 400


def encoded(payload: dict[str, Any], label: str, accept_encoding: str) -> HttpResponse:
    """Record one execution, then answer with a JSON body, compressed by the view when asked.

    Payload keys: ``label`` (str); ``gzip`` (bool: when the request accepts gzip, the view
    compresses its own body, as a view serving pre-compressed content does); ``vary`` (str:
    a header the view says its response varies on).
    """
    Execution.objects.create(label=label)
    executions = Execution.objects.filter(label=label).count()
    body = json.dumps({"label": label, "executions": executions, "padding": PADDING}).encode()
    response = HttpResponse(body, status=201, content_type="application/json")
    if payload.get("vary"):
        patch_vary_headers(response, [str(payload["vary"])])
    if payload.get("gzip"):
        patch_vary_headers(response, ["Accept-Encoding"])
        if "gzip" in accept_encoding:
            response.content = gzip.compress(body)
            response["Content-Encoding"] = "gzip"
    return response


def _payload(request: HttpRequest) -> dict[str, Any]:
    data = json.loads(request.body or b"{}")
    return data if isinstance(data, dict) else {}


def _answer(request: HttpRequest, payload: dict[str, Any]) -> HttpResponse:
    label = str(payload.get("label") or request.path)
    return encoded(payload, label, request.headers.get("Accept-Encoding", ""))


@csrf_exempt
def encoded_plain(request: HttpRequest) -> HttpResponse:
    return _answer(request, _payload(request))


@csrf_exempt
@idempotent(required=True)
def encoded_decorated(request: HttpRequest) -> HttpResponse:
    return _answer(request, _payload(request))


@csrf_exempt
@gzip_page
def encoded_gzip_page(request: HttpRequest) -> HttpResponse:
    return _answer(request, _payload(request))


@csrf_exempt
async def encoded_async(request: HttpRequest) -> HttpResponse:
    return await sync_to_async(_answer)(request, _payload(request))


class EncodedDRFView(IdempotencyMixin, APIView):
    idempotency_required = True

    def post(self, request: Request) -> HttpResponse:
        payload = dict(request.data) if isinstance(request.data, dict) else {}
        return _answer(request, payload)
