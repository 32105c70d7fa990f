"""Start the example API and show, in a short transcript, what Idempotency-Key does."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from rest_framework.authtoken.models import Token

from example_project.shop.models import Order, Payment
from example_project.shop.webhooks import SIGNATURE_HEADER, sign

BODY_PREVIEW = 240


@dataclass
class Reply:
    """What the server sent back."""

    status: int
    reason: str
    content_type: str
    is_replayed: bool
    body: bytes

    def describe(self) -> str:
        """Return a one-line rendering: status, replay header, content type, body."""
        replayed = "  Idempotent-Replayed: true" if self.is_replayed else ""
        text = self.body.decode("utf-8", "replace")
        if len(text) > BODY_PREVIEW:
            text = text[:BODY_PREVIEW] + "…"
        return f"{self.status} {self.reason}{replayed}  [{self.content_type}]  {text}"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    key: str | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """Send one request on a fresh connection, as the holder of ``token``; read the reply."""
    headers = {"Content-Type": "application/json", "Accept": "application/json", **(headers or {})}
    if key is not None:
        headers["Idempotency-Key"] = key
    if token is not None:
        headers["Authorization"] = f"Token {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return Reply(
            status=response.status,
            reason=response.reason,
            content_type=response.headers.get("Content-Type", ""),
            is_replayed=response.headers.get("Idempotent-Replayed") == "true",
            body=response.read(),
        )
    finally:
        conn.close()


def encode(payload: dict[str, Any]) -> bytes:
    """Serialise a JSON body the same way every time, so retries are byte-identical."""
    return json.dumps(payload, separators=(",", ":")).encode()


class Command(BaseCommand):
    help = (
        "Start the example API with runserver on a free port and show a first request, "
        "a replayed retry, a concurrent burst that executes once, a mismatch (422), a "
        "webhook delivered twice and handled once, and "
        "that no customer ever gets another's response."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=0, help="Port (default: a free one).")
        parser.add_argument(
            "--burst", type=int, default=10, help="Concurrent identical requests in step 3."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        # Two customers of the shop, each with an API token.
        self.tokens = {name: self.api_token(name) for name in ("alice", "bob")}
        port: int = options["port"] or free_port()
        self.failures: list[str] = []
        with tempfile.TemporaryFile() as log:
            server = self.start_server(port, log)
            try:
                self.wait_until_ready(server, port, log)
                database = settings.DATABASES["default"]
                self.stdout.write(
                    f"Example API at http://127.0.0.1:{port}/ "
                    f"({database['ENGINE'].rsplit('.', 1)[-1]}: {database['NAME']})\n"
                )
                self.run_steps(port, options["burst"])
            finally:
                self.stop_server(server)
        if self.failures:
            raise CommandError(
                f"{len(self.failures)} expectation(s) failed: " + "; ".join(self.failures)
            )
        self.stdout.write(self.style.SUCCESS("\nEvery expectation held."))

    def api_token(self, username: str) -> str:
        """Return the API token of a demo customer, creating both when needed."""
        user, _ = get_user_model().objects.get_or_create(username=username)
        token, _ = Token.objects.get_or_create(user=user)
        return str(token.key)

    # --- the server --------------------------------------------------------------------------

    def start_server(self, port: int, log: IO[bytes]) -> subprocess.Popen[bytes]:
        """Start ``manage.py runserver`` in a child process, its output going to ``log``."""
        manage = Path(settings.BASE_DIR) / "manage.py"
        return subprocess.Popen(
            [sys.executable, str(manage), "runserver", "--noreload", f"127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_until_ready(self, server: subprocess.Popen[bytes], port: int, log: IO[bytes]) -> None:
        """Poll the API until it answers, or fail with the server's own output."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if server.poll() is not None:
                break
            try:
                request(port, "GET", "/api/orders/")
            except OSError:
                time.sleep(0.2)
            else:
                return
        log.seek(0)
        output = log.read().decode("utf-8", "replace")[-3000:]
        raise CommandError(f"the example API did not start on port {port}:\n{output}")

    def stop_server(self, server: subprocess.Popen[bytes]) -> None:
        """Terminate the server and wait for it to exit."""
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()

    # --- the transcript ----------------------------------------------------------------------

    def expect(self, condition: bool, failure: str) -> None:
        """Print ok or the failed expectation, and remember failures."""
        if condition:
            self.stdout.write(self.style.SUCCESS("   ok"))
        else:
            self.failures.append(failure)
            self.stdout.write(self.style.ERROR(f"   FAILED: expected {failure}"))

    def show(self, reply: Reply) -> None:
        self.stdout.write(f"   -> {reply.describe()}")

    def run_steps(self, port: int, burst: int) -> None:
        """Run the eight steps against the running API."""
        key = f"demo-{uuid.uuid4().hex[:12]}"
        alice = self.tokens["alice"]
        order = {"item": "espresso beans", "quantity": 2, "amount": "18.50"}
        self.stdout.write(
            f"1. First request: Alice sends POST /api/orders/ with Idempotency-Key: {key}"
        )
        self.stdout.write(f"   {encode(order).decode()}")
        first = request(port, "POST", "/api/orders/", encode(order), key, alice)
        self.show(first)
        self.expect(first.status == 201 and not first.is_replayed, "a fresh 201 Created")

        self.stdout.write("\n2. Retry: the same key and the same body")
        retry = request(port, "POST", "/api/orders/", encode(order), key, alice)
        self.show(retry)
        self.stdout.write(f"   body identical to the first response: {retry.body == first.body}")
        self.expect(
            retry.status == 201 and retry.is_replayed and retry.body == first.body,
            "201 with Idempotent-Replayed: true and the identical body",
        )

        self.burst(port, burst)

        self.stdout.write("\n4. The first key again, with a different body (quantity 3)")
        changed = encode({**order, "quantity": 3})
        mismatch = request(port, "POST", "/api/orders/", changed, key, alice)
        self.show(mismatch)
        self.expect(mismatch.status == 422, "422 for a key reused with a different body")

        self.other_callers(port, key, order, first)
        self.payments(port, first)
        self.webhook(port, first)
        self.metrics(port)

    def other_callers(self, port: int, key: str, order: dict[str, Any], first: Reply) -> None:
        """Show that Alice's key means nothing to anyone else."""
        self.stdout.write("\n5. Bob sends Alice's key and body: his own order, not her response")
        for_bob = request(port, "POST", "/api/orders/", encode(order), key, self.tokens["bob"])
        self.show(for_bob)
        self.expect(
            for_bob.status == 201 and not for_bob.is_replayed and for_bob.body != first.body,
            "a fresh 201 for Bob, never a replay of Alice's order",
        )
        self.stdout.write("   And without credentials:")
        anonymous = request(port, "POST", "/api/orders/", encode(order), key)
        self.show(anonymous)
        self.expect(
            anonymous.status == 401 and not anonymous.is_replayed,
            "401 from the API's authentication, and nothing of Alice's",
        )

    def burst(self, port: int, size: int) -> None:
        """Fire identical requests of Alice's at once with one new key; count what ran."""
        key = f"demo-{uuid.uuid4().hex[:12]}"
        item = f"burst {key}"
        body = encode({"item": item, "quantity": 1, "amount": "4.20"})
        self.stdout.write(
            f"\n3. Burst: {size} identical requests at the same moment, one new key {key}"
        )
        barrier = threading.Barrier(size)

        def send(_: int) -> Reply:
            barrier.wait()
            return request(port, "POST", "/api/orders/", body, key, self.tokens["alice"])

        with ThreadPoolExecutor(max_workers=size) as pool:
            replies = list(pool.map(send, range(size)))
        seen = sorted(
            Counter((r.status, r.is_replayed) for r in replies).items(),
            key=lambda item: item[0],
        )
        created = Order.objects.filter(item=item).count()
        self.stdout.write(
            "   -> "
            + ", ".join(
                f"{status}{' replayed' if is_replayed else ''} x{n}"
                for (status, is_replayed), n in seen
            )
        )
        self.stdout.write(f"   orders created in the database: {created}")
        if connection.vendor == "sqlite" and any(r.is_replayed for r in replies):
            self.stdout.write("   (SQLite queues writers: duplicates mostly wait, then replay)")
        executed = sum(1 for r in replies if r.status == 201 and not r.is_replayed)
        self.expect(
            created == 1 and executed == 1 and {r.status for r in replies} <= {201, 409},
            "exactly one order created, one fresh 201, and only 201 replays or 409s besides",
        )

    def payments(self, port: int, first_order: Reply) -> None:
        """Show the plain Django view behind the middleware and @idempotent."""
        try:
            order_id = int(json.loads(first_order.body)["id"])
        except (ValueError, KeyError, TypeError):
            order_id = Order.objects.create(item="fallback", quantity=1, amount="1.00").pk
        key = f"demo-{uuid.uuid4().hex[:12]}"
        payment = {"order": order_id, "amount": "18.50"}
        self.stdout.write(
            f"\n6. Plain Django view (middleware + @idempotent): POST /payments/ twice with "
            f"key {key}, then a different amount"
        )
        self.stdout.write(f"   {encode(payment).decode()}")
        alice = self.tokens["alice"]
        paid = request(port, "POST", "/payments/", encode(payment), key, alice)
        self.show(paid)
        again = request(port, "POST", "/payments/", encode(payment), key, alice)
        self.show(again)
        changed = encode({**payment, "amount": "1.00"})
        other = request(port, "POST", "/payments/", changed, key, alice)
        self.show(other)
        self.expect(
            paid.status == 201
            and again.status == 201
            and again.is_replayed
            and again.body == paid.body
            and other.status == 422
            and other.content_type.startswith("application/problem+json"),
            "201, then the identical 201 replayed, then 422 application/problem+json",
        )

    def webhook(self, port: int, first_order: Reply) -> None:
        """Show a webhook delivered twice, and a forged copy first: the handler runs once."""
        order_id = int(json.loads(first_order.body).get("id", 0))
        event_id = f"evt_{uuid.uuid4().hex[:16]}"
        event = {
            "id": event_id,
            "type": "payment.succeeded",
            "data": {"object": {"amount": "18.50", "metadata": {"order": order_id}}},
        }
        body = encode(event)
        self.stdout.write(
            f"\n7. Webhook: the payment provider delivers event {event_id} twice to "
            "POST /webhooks/payments/, after a forged copy with the same id"
        )
        paid_before = Payment.objects.filter(order_id=order_id).count()
        signed = sign(body, settings.WEBHOOK_SECRET, int(time.time()))
        forged = self.deliver(port, body, sign(body, "not-the-secret", int(time.time())))
        self.show(forged)
        delivered = self.deliver(port, body, signed)
        self.show(delivered)
        again = self.deliver(port, body, signed)
        self.show(again)
        paid = Payment.objects.filter(order_id=order_id).count() - paid_before
        self.stdout.write(f"   payments the event recorded: {paid}")
        self.expect(
            forged.status == 400
            and delivered.status == 200
            and again.status == 200
            and again.body == delivered.body
            and paid == 1,
            "400 for the forged copy, then 200 twice with one body, and one payment",
        )

    def deliver(self, port: int, body: bytes, signature: str) -> Reply:
        """Deliver a webhook event as the provider does: signed, without an Idempotency-Key."""
        return request(
            port, "POST", "/webhooks/payments/", body, headers={SIGNATURE_HEADER: signature}
        )

    def metrics(self, port: int) -> None:
        """Show the outcomes the steps above left in the Prometheus counters."""
        if not settings.HAS_PROMETHEUS:
            self.stdout.write(
                "\n8. Metrics: not served; install the metrics extra "
                '(pip install "django-idempotency[metrics]") to see them at /metrics/'
            )
            return
        self.stdout.write(
            f"\n8. Metrics for Prometheus: GET http://127.0.0.1:{port}/metrics/ (docs/metrics.md;"
            " served while the demo runs: `manage.py runserver` serves it at"
            " http://127.0.0.1:8000/metrics/)"
        )
        reply = request(port, "GET", "/metrics/")
        counted: Counter[str] = Counter()
        for line in reply.body.decode().splitlines():
            if line.startswith("django_idempotency_outcomes_total{"):
                outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
                counted[outcome] += int(float(line.rsplit(" ", 1)[1]))
                self.stdout.write(f"   {line}")  # as served
        self.expect(
            reply.status == 200 and counted["replayed"] >= 2 and counted["mismatch"] >= 1,
            "the replays and the 422 above counted in django_idempotency_outcomes_total",
        )
