"""URLs of the live gunicorn: the test app's, a slow order view that reports its pid, and
the property test's views under ``/props/`` (tests/live_principals.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

from django_idempotency.decorators import idempotency_exempt, idempotent
from tests.testapp.models import Execution, Order
from tests.testapp.urls import urlpatterns as testapp_urlpatterns

#: Header naming a file the view writes its pid into, once its business writes are done.
PID_FILE_HEADER = "X-Test-Pid-File"
#: Header with the seconds the view sleeps after writing (headers are not fingerprinted).
SLEEP_HEADER = "X-Test-Sleep"
WORKER_PID_HEADER = "X-Worker-Pid"


def worker_pid_middleware(
    get_response: Callable[[HttpRequest], HttpResponse],
) -> Callable[[HttpRequest], HttpResponse]:
    """Tell the client which worker process answered."""

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        response[WORKER_PID_HEADER] = str(os.getpid())
        return response

    return middleware


@csrf_exempt
@idempotent(required=True)
def slow_order(request: HttpRequest) -> HttpResponse:
    """Create an Order and an Execution, say so through the pid file, then sleep."""
    item = str(json.loads(request.body)["item"])
    order = Order.objects.create(item=item)
    Execution.objects.create(label=item)
    pid_file = request.headers.get(PID_FILE_HEADER)
    if pid_file:
        partial = Path(pid_file + ".partial")
        partial.write_text(str(os.getpid()))
        partial.rename(pid_file)
    time.sleep(float(request.headers.get(SLEEP_HEADER, "0")))
    return JsonResponse({"order": order.pk, "item": item}, status=201)


@idempotency_exempt
def ready(request: HttpRequest) -> HttpResponse:
    """Answer once the worker has loaded the project."""
    return HttpResponse("ready")


urlpatterns = [
    path("live/orders/", slow_order),
    path("live/ready/", ready),
    path("props/", include("tests.live_principals")),
    *testapp_urlpatterns,
]
