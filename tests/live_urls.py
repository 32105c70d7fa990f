"""URLs of the live gunicorn: the test app's, a slow order view that reports its pid, gated
order and charge views that wait for the test's word before they answer, the worker's clock,
and the property test's views under ``/props/`` (tests/live_principals.py).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, include, path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.authentication import BasicAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency.decorators import idempotency_exempt, idempotent
from django_idempotency.mixins import IdempotencyMixin
from tests.testapp.models import Execution, Order
from tests.testapp.urls import urlpatterns as testapp_urlpatterns

#: Header naming a file the view writes its pid into, once its business writes are done.
PID_FILE_HEADER = "X-Test-Pid-File"
#: Header with the seconds the view sleeps after writing (headers are not fingerprinted).
SLEEP_HEADER = "X-Test-Sleep"
WORKER_PID_HEADER = "X-Worker-Pid"
#: Header naming a gate file: the gated view records its execution, writes
#: ``<gate>.started``, then waits until ``<gate>`` exists before it answers.
GATE_HEADER = "X-Test-Gate"
#: Header with what the gated view does once it ran: ``created`` (the default), ``error``
#: or ``raise`` (headers are not fingerprinted, so a retry may behave otherwise).
OUTCOME_HEADER = "X-Test-Outcome"
#: Header naming the file the gated charge appends a line to each time it runs.
LEDGER_HEADER = "X-Test-Ledger"
#: How long a gated view waits at most, so a failed test never leaves a worker hanging.
GATE_SECONDS = 120.0
#: The lease of the gated views under ``short-lease/``; the others use IDEMPOTENCY_LEASE.
SHORT_LEASE = float(os.environ.get("IDEMPOTENCY_LIVE_SHORT_LEASE", "2"))
#: Per-view options of the gated views, by the last part of their path.
GATED_VARIANTS: dict[str, dict[str, Any]] = {
    "": {},
    "short-lease/": {"lease": SHORT_LEASE},
    "unstored/": {"store_server_errors": False, "lease": SHORT_LEASE},
}


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


def _write_atomically(target: Path, text: str) -> None:
    partial = target.with_name(target.name + ".partial")
    partial.write_text(text)
    partial.rename(target)


def _wait_at_gate(request: HttpRequest) -> None:
    """Write ``<gate>.started``, then wait until the test creates ``<gate>`` (if any)."""
    gate = request.headers.get(GATE_HEADER)
    if gate:
        _write_atomically(Path(gate + ".started"), str(os.getpid()))
        deadline = time.monotonic() + GATE_SECONDS
        while not Path(gate).exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the test never opened the gate {gate}")
            time.sleep(0.01)


def gated_order(request: HttpRequest, item: str) -> HttpResponse:
    """Record one execution, wait at the request's gate, then answer as its outcome says.

    The outcome is ``created`` (201), ``error`` (a 500 response) or ``raise`` (an exception
    after the execution was recorded: its effects happened, its outcome is unknown).
    """
    outcome = request.headers.get(OUTCOME_HEADER, "created")
    Execution.objects.create(label=item)
    _wait_at_gate(request)
    if outcome == "raise":
        raise RuntimeError("the view failed after its effects")
    body = {"item": item, "executions": Execution.objects.filter(label=item).count()}
    return JsonResponse(body, status=500 if outcome == "error" else 201)


def _gated_plain_view(**options: Any) -> Callable[[HttpRequest], HttpResponse]:
    @csrf_exempt
    @idempotent(required=True, **options)
    def view(request: HttpRequest) -> HttpResponse:
        return gated_order(request, str(json.loads(request.body)["item"]))

    return view


class GatedOrderView(IdempotencyMixin, APIView):
    """The gated order behind the DRF mixin, for Basic-authenticated users only."""

    authentication_classes = [BasicAuthentication]
    permission_classes = [IsAuthenticated]
    idempotency_required = True

    def post(self, request: Request) -> HttpResponse:
        data: Any = request.data
        return gated_order(request, str(data["item"]))


def _gated_urls() -> list[URLPattern]:
    urls = []
    for variant, options in GATED_VARIANTS.items():
        attributes = {f"idempotency_{name}": value for name, value in options.items()}
        urls.append(path(f"live/gated/plain/{variant}", _gated_plain_view(**options)))
        urls.append(path(f"live/gated/drf/{variant}", GatedOrderView.as_view(**attributes)))
    return urls


@csrf_exempt
@idempotent(required=True)
def gated_charge(request: HttpRequest) -> HttpResponse:
    """Charge at an outside provider, wait at the request's gate, then answer 201.

    The charge is a line with the worker's pid appended to the file the ledger header
    names: like a payment provider's call, the database transaction that fencing rolls
    back cannot take it back, so the ledger counts every run of the view.
    """
    with Path(request.headers[LEDGER_HEADER]).open("a") as ledger:
        ledger.write(f"{os.getpid()}\n")
    _wait_at_gate(request)
    return JsonResponse({"charge": uuid.uuid4().hex, "worker": os.getpid()}, status=201)


@idempotency_exempt
def clock(request: HttpRequest) -> HttpResponse:
    """Answer this worker's wall clock (``time.time()``), to show how skewed it is."""
    return JsonResponse({"time": time.time()})


@idempotency_exempt
def ready(request: HttpRequest) -> HttpResponse:
    """Answer once the worker has loaded the project."""
    return HttpResponse("ready")


urlpatterns = [
    path("live/orders/", slow_order),
    path("live/ready/", ready),
    path("live/clock/", clock),
    path("live/gated/charge/", gated_charge),
    *_gated_urls(),
    path("props/", include("tests.live_principals")),
    *testapp_urlpatterns,
]
