"""Separate worker processes: a live gunicorn with four sync workers on the test database.

The server runs ``tests.live_settings`` against the PostgreSQL test database (the tests use
``transaction=True``, so what they and the workers write is committed and visible to both
sides), once with DatabaseStorage and once with CacheStorage on the test Redis. Each worker
has its own database connection and its own Redis connection pool.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from django_idempotency.exceptions import IdempotencyKeyInProgress
from django_idempotency.storage import CacheStorage, DatabaseStorage, Storage
from tests.leases import expire_now
from tests.live_server import LiveServer, live_gunicorn
from tests.live_urls import PID_FILE_HEADER, SLEEP_HEADER, WORKER_PID_HEADER
from tests.testapp.models import Execution, Order

pytestmark = [pytest.mark.server_db, pytest.mark.django_db(transaction=True)]

WORKERS = 4
# Far longer than any test runs: a lease ends when a test ends it in the store (expire_now).
LEASE = 600
REQUEST_SECONDS = 30.0
OVERLAP_SECONDS = 0.5


@dataclass(frozen=True)
class Answer:
    status: int
    replayed: bool
    body: bytes
    worker: int | None

    @property
    def is_in_progress(self) -> bool:
        if self.status != 409:
            return False
        problem = json.loads(self.body)
        return bool(problem["code"] == IdempotencyKeyInProgress.default_code)


def post(
    server: LiveServer,
    path: str,
    key: str,
    payload: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Answer:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(payload).encode(),
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            # One client's retries: the middleware scopes them by this header's hash.
            "Authorization": "Bearer live-caller",
            **(headers or {}),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
            return _answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return _answer(error.code, error.headers, error.read())


def _answer(status: int, headers: Any, body: bytes) -> Answer:
    worker = headers.get(WORKER_PID_HEADER)
    return Answer(
        status=status,
        replayed=headers.get("Idempotent-Replayed") == "true",
        body=body,
        worker=int(worker) if worker else None,
    )


@pytest.fixture(
    scope="module",
    params=["database", pytest.param("cache", marks=pytest.mark.redis)],
)
def server(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    """A gunicorn with four sync workers on the test database, stopped however the tests end."""
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with live_gunicorn(log=log, storage=request.param, lease=LEASE, workers=WORKERS) as server:
        yield server


def live_storage(server: LiveServer) -> Storage:
    """Return the storage the server keeps its records in, as this process reaches it."""
    return CacheStorage("idempotency") if server.storage == "cache" else DatabaseStorage()


@pytest.fixture
def live(server: LiveServer, request: pytest.FixtureRequest) -> LiveServer:
    if server.storage == "cache":
        request.getfixturevalue("redis_cache")
    # A previous test may have killed a worker; start from four live ones.
    server.wait_until_ready(exclude=set())
    return server


def test_gunicorn_workers__simultaneous_duplicates_run_the_view_once(live: LiveServer) -> None:
    key, item = f"key-{uuid.uuid4()}", f"item-{uuid.uuid4()}"
    count = 24
    barrier = threading.Barrier(count)
    answers: list[Answer] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            barrier.wait(timeout=REQUEST_SECONDS)
            answers.append(
                post(
                    live, "/live/orders/", key, {"item": item}, {SLEEP_HEADER: str(OVERLAP_SECONDS)}
                )
            )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=REQUEST_SECONDS * 2)

    assert errors == []
    assert len(answers) == count
    owners = [a for a in answers if a.status == 201 and not a.replayed]
    assert len(owners) == 1, [(a.status, a.replayed) for a in answers]
    for answer in answers:
        if answer is not owners[0]:
            assert answer.is_in_progress or (answer.replayed and answer.body == owners[0].body)
    assert any(a.is_in_progress for a in answers)
    assert Execution.objects.filter(label=item).count() == 1
    assert Order.objects.filter(item=item).count() == 1
    # The duplicates were answered by several processes, not serialized in one (usually
    # all four: the owner's worker sleeps while the other three answer the rest).
    assert len({a.worker for a in answers}) >= WORKERS - 1


def test_gunicorn_workers__killed_mid_request_frees_the_key_after_its_lease(
    live: LiveServer, tmp_path: Path
) -> None:
    key, item = f"key-{uuid.uuid4()}", f"item-{uuid.uuid4()}"
    pid_file = tmp_path / "worker.pid"
    doomed: list[BaseException | Answer] = []

    def send_doomed() -> None:
        try:
            doomed.append(
                post(
                    live,
                    "/live/orders/",
                    key,
                    {"item": item},
                    {SLEEP_HEADER: "30", PID_FILE_HEADER: str(pid_file)},
                )
            )
        except BaseException as exc:
            doomed.append(exc)

    thread = threading.Thread(target=send_doomed, daemon=True)
    thread.start()
    # The pid file appears once the view has claimed the key and made its writes.
    deadline = time.monotonic() + REQUEST_SECONDS
    while not pid_file.exists():
        assert time.monotonic() < deadline, f"the view never started:\n{live.log_tail()}"
        time.sleep(0.02)
    worker = int(pid_file.read_text())
    assert worker in live.worker_pids()

    os.kill(worker, signal.SIGKILL)
    thread.join(timeout=REQUEST_SECONDS)

    # The client of the killed request got no answer at all.
    assert len(doomed) == 1
    assert isinstance(doomed[0], OSError | urllib.error.URLError), doomed
    # While the lease lasts, the key is in flight: the retry is refused, not run.
    retry = post(live, "/live/orders/", key, {"item": item})
    assert retry.is_in_progress, retry
    if live.storage == "database":
        # Killed before its commit: the view's writes went with its transaction.
        assert Execution.objects.filter(label=item).count() == 0
        assert Order.objects.filter(item=item).count() == 0
    else:
        # CacheStorage shares no transaction with the view: what it wrote is committed.
        assert Execution.objects.filter(label=item).count() == 1

    # Once the lease ends by the store's clock, the next retry takes the key over and runs
    # exactly once.
    expire_now(key, storage=live_storage(live))
    retry = post(live, "/live/orders/", key, {"item": item})
    assert (retry.status, retry.replayed) == (201, False)

    runs = 1 if live.storage == "database" else 2
    assert Execution.objects.filter(label=item).count() == runs
    assert Order.objects.filter(item=item).count() == runs
    assert json.loads(retry.body)["order"] == Order.objects.filter(item=item).latest("pk").pk
    # Later retries replay that response; nothing runs again.
    again = post(live, "/live/orders/", key, {"item": item})
    assert (again.status, again.replayed, again.body) == (201, True, retry.body)
    assert Execution.objects.filter(label=item).count() == runs
    # gunicorn replaced the killed worker.
    live.wait_until_ready(exclude={worker})


@pytest.mark.parametrize(
    "lines", [("same", "same"), ("first", "second")], ids=["repeated", "different"]
)
def test_gunicorn__two_key_header_lines_are_one_400(
    live: LiveServer, lines: tuple[str, str]
) -> None:
    # The server joins repeated header lines with a comma (RFC 9110 §5.3); the joined value
    # must never be taken for one key (issue 7).
    import http.client
    from urllib.parse import urlsplit

    url = urlsplit(live.url)
    body = json.dumps({"item": f"item-{uuid.uuid4()}"}).encode()
    assert url.hostname is not None
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=REQUEST_SECONDS)
    try:
        connection.putrequest("POST", "/live/orders/")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(len(body)))
        connection.putheader("Authorization", "Bearer live-caller")
        for value in lines:
            connection.putheader("Idempotency-Key", value)
        connection.endheaders(body)
        response = connection.getresponse()
        problem = json.loads(response.read())
    finally:
        connection.close()

    assert response.status == 400
    assert problem["code"] == "idempotency_key_invalid"
    assert Order.objects.count() == 0
