"""Start a real Celery worker on the test database and a queue of its own; a bank that counts.

``celery_worker()`` runs ``celery worker`` (prefork, one child) under ``tests.live_settings``
on the PostgreSQL test database, consuming a queue no other test uses, and stops it (and
deletes its queue) however the block ends. ``CountingBank`` is the outside service the tasks
call: a local HTTP server that charges once per idempotency key and counts every call.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest
from kombu import Queue

from tests.celery_app import BROKER_URL, app
from tests.conftest import REQUIRE_SERVICES
from tests.live_server import ROOT, STORAGES

BOOT_SECONDS = 60.0
STOP_SECONDS = 10.0


def broker_problem() -> str | None:
    """Return why the broker cannot be reached, or None."""
    url = urlparse(BROKER_URL)
    try:
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 5672), 2):
            return None
    except OSError as exc:
        return f"RabbitMQ at {url.hostname}:{url.port} is unreachable ({exc})"


def require_broker() -> None:
    problem = broker_problem()
    if problem and REQUIRE_SERVICES:
        pytest.fail(f"this test needs RabbitMQ: {problem}")
    if problem:
        pytest.skip(f"needs RabbitMQ: {problem}")


@dataclass
class Worker:
    """A running ``celery worker``: its master process, queue and log."""

    process: subprocess.Popen[bytes] = field(repr=False)
    queue: str
    log: Path = field(repr=False)

    def log_tail(self, characters: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-characters:]

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + BOOT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"celery exited with {self.process.returncode}:\n{self.log_tail()}")
            if " ready." in self.log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        pytest.fail(f"celery was not ready in time:\n{self.log_tail()}")

    def wait_for_log(self, text: str) -> None:
        """Wait until the worker's log says ``text``; fail with the log if it never does."""
        deadline = time.monotonic() + BOOT_SECONDS
        while time.monotonic() < deadline:
            if text in self.log.read_text(errors="replace"):
                return
            time.sleep(0.05)
        pytest.fail(f"the worker's log never said {text!r}:\n{self.log_tail()}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_SECONDS)


@contextmanager
def celery_worker(*, log: Path, storage: str, lease: float) -> Iterator[Worker]:
    """Run a ready worker for the block, on a queue of its own; stop it however the block ends.

    Call it where pytest-django's test database exists (``transaction=True`` tests).
    """
    from django.db import connection

    require_broker()
    queue = f"idempotency-test-{uuid.uuid4().hex[:12]}"
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.live_settings",
        "IDEMPOTENCY_TEST_DATABASE": "postgres",
        "IDEMPOTENCY_LIVE_DATABASE_NAME": connection.settings_dict["NAME"],
        "IDEMPOTENCY_LIVE_STORAGE": STORAGES[storage],
        "IDEMPOTENCY_LIVE_LEASE": str(lease),
        "PYTHONPATH": str(ROOT),
    }
    command = [
        *(sys.executable, "-m", "celery", "-A", "tests.celery_app", "worker"),
        *("--pool=prefork", "--concurrency=1", f"--queues={queue}", "--loglevel=INFO"),
        *(f"--hostname={queue}@%h", "--without-mingle", "--without-gossip", "--without-heartbeat"),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=output, stderr=output)
    worker = Worker(process, queue, log)
    try:
        worker.wait_until_ready()
        yield worker
    finally:
        worker.stop()
        with app.connection_for_write() as broker:
            Queue(queue).bind(broker.default_channel).delete()


class CountingBank:
    """An outside service with its own idempotency: one charge per key, every call counted.

    The first call with a key answers ``"hold": true`` once ``hold_first`` is set, and
    tells the test the caller's pid (``held``), so the test can kill it there.
    """

    def __init__(self, *, hold_first: bool = False) -> None:
        self.hold_first = hold_first
        self.calls: Counter[str] = Counter()
        self.held_pids: list[int] = []
        self.held = threading.Event()
        self._lock = threading.Lock()
        bank = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                key = self.headers["Idempotency-Key"]
                with bank._lock:
                    bank.calls[key] += 1
                    first = bank.calls[key] == 1
                    hold = first and bank.hold_first
                    if hold:
                        bank.held_pids.append(int(self.headers["X-Worker-Pid"]))
                body = json.dumps({"charge": f"ch_{key}", "hold": hold}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                if hold:
                    bank.held.set()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/charges"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingBank:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def charges(self) -> int:
        """How many charges the bank made: one per key, however often it was called."""
        return len(self.calls)
