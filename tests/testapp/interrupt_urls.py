"""Views stopped by a ``BaseException``, one behind each entry point (test_interrupted_views)."""

from __future__ import annotations

import asyncio
from typing import NoReturn

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency.decorators import idempotent
from django_idempotency.mixins import IdempotencyMixin
from tests.testapp.models import Execution


def interrupted() -> NoReturn:
    """Write, then stop as gunicorn's worker timeout stops a sync worker: ``sys.exit(1)``."""
    Execution.objects.create(label="interrupted")
    raise SystemExit(1)


@csrf_exempt
def plain(request: HttpRequest) -> NoReturn:
    interrupted()


@csrf_exempt
@idempotent(required=True)
def decorated(request: HttpRequest) -> NoReturn:
    interrupted()


@csrf_exempt
@idempotent(required=True)
async def cancelled(request: HttpRequest) -> NoReturn:
    """Write, then stop as an async view does when its task is cancelled (a client gone away)."""
    await sync_to_async(Execution.objects.create)(label="interrupted")
    raise asyncio.CancelledError


class Mixin(IdempotencyMixin, APIView):
    def post(self, request: Request) -> NoReturn:
        interrupted()


urlpatterns = [
    path("plain/", plain),
    path("decorated/", decorated),
    path("async/cancelled/", cancelled),
    path("mixin/", Mixin.as_view()),
]
