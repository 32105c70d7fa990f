"""Clock skew between app servers never shortens a lease: the store's clock measures it.

Three gunicorns, one sync worker each, serve the PostgreSQL test database with
DatabaseStorage and a 30 s lease: one on the true clock, one 40 s ahead of it and one 40 s
behind (libfaketime shifts their wall clock; ``/live/clock/`` answers each one's
``time.time()``, so every test first shows the skew is real). An owner claims a key on one
server and is held inside a charge view until the test opens its gate; the view appends a line
to a ledger file each time it runs, an effect that no database rollback takes back, like a call
to a payment provider. A duplicate with the same key and body goes at once to a server with
another clock: it must find the key in flight (409), never take it over. Once the gate opens,
the owner answers 201, a retry on every server replays it, and the ledger holds one charge
(issue 7, item 5).

Measured by the app servers' own clocks, a claim made 40 s behind expired 10 s before it was
made for a server on time, and a server 40 s ahead finds a claim made on time 10 s expired:
those two directions took the key over. A claim made ahead, or seen from behind, only lasts
longer.
"""

from __future__ import annotations

import glob
import json
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from django_idempotency.exceptions import IdempotencyKeyInProgress
from tests.conftest import REQUIRE_SERVICES
from tests.live_server import LiveServer, start_gunicorn
from tests.live_urls import GATE_HEADER, LEDGER_HEADER

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 30.0
SKEW_SECONDS = 40
#: Each server's wall clock, in seconds from the true one.
CLOCKS = {"true": 0, "ahead": SKEW_SECONDS, "behind": -SKEW_SECONDS}
#: How far a measured offset may stray from the configured one: the time a request takes on
#: a loaded machine, far below the 10 s by which the skew outlasts the lease.
OFFSET_TOLERANCE_SECONDS = 5.0
REQUEST_SECONDS = 30.0
#: Where libfaketime's preload library lives on Debian/Ubuntu (any architecture) and in a
#: source install; ``IDEMPOTENCY_TEST_LIBFAKETIME`` names another.
LIBFAKETIME_PATTERNS = (
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


def find_libfaketime() -> Path | None:
    """Return the path of libfaketime's preload library, or None when it is not installed."""
    configured = os.environ.get("IDEMPOTENCY_TEST_LIBFAKETIME")
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    for pattern in LIBFAKETIME_PATTERNS:
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    return None


def skewed_clock_env(library: Path, seconds: int) -> dict[str, str]:
    """Return the environment that shifts a process's wall clock by ``seconds``."""
    if seconds == 0:
        return {}
    return {
        "LD_PRELOAD": " ".join(filter(None, [str(library), os.environ.get("LD_PRELOAD")])),
        "FAKETIME": f"{seconds:+d}s",
        # libfaketime shifts the monotonic clock by the same constant, which keeps every
        # interval true. Leaving it alone (FAKETIME_DONT_FAKE_MONOTONIC=1) is worse: with
        # libfaketime 0.9.10, Python's time.sleep (clock_nanosleep on an absolute monotonic
        # deadline) then fails with EINVAL, in gunicorn's master and workers alike.
        # File timestamps stay as written, for builds that shift what stat returns: gunicorn's
        # worker heartbeat writes monotonic seconds into a temp file's mtime, and the master
        # reads them back with fstat and compares them with its own monotonic clock.
        "NO_FAKE_STAT": "1",
    }


@dataclass(frozen=True)
class Answer:
    status: int
    replayed: bool
    body: bytes

    @property
    def problem_code(self) -> str | None:
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        return document.get("code") if isinstance(document, dict) else None

    def __str__(self) -> str:
        return f"{self.status} replayed={self.replayed} {self.body[:300]!r}"


def send(request: urllib.request.Request) -> Answer:
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, error.headers, error.read()
    return Answer(status, headers.get("Idempotent-Replayed") == "true", body)


def charge(
    server: LiveServer, key: str, body: dict[str, Any], ledger: Path, gate: Path | None = None
) -> Answer:
    """POST the gated charge; with a gate, the view waits until the test opens it."""
    headers = {
        "Content-Type": "application/json",
        "Idempotency-Key": key,
        # One client's retries: the middleware scopes them by this header's hash.
        "Authorization": "Bearer skewed-caller",
        LEDGER_HEADER: str(ledger),
    }
    if gate is not None:
        headers[GATE_HEADER] = str(gate)
    return send(
        urllib.request.Request(
            server.url + "/live/gated/charge/",
            data=json.dumps(body).encode(),
            headers=headers,
            method="POST",
        )
    )


def clock_offset(server: LiveServer) -> float:
    """Return how far the server's ``time.time()`` is from this process's, in seconds."""
    before = time.time()
    with urllib.request.urlopen(server.url + "/live/clock/", timeout=REQUEST_SECONDS) as answer:
        server_time = float(json.loads(answer.read())["time"])
    return server_time - (before + time.time()) / 2


def charges(ledger: Path) -> int:
    return len(ledger.read_text().splitlines()) if ledger.exists() else 0


@pytest.fixture(scope="module")
def libfaketime() -> Path:
    library = find_libfaketime()
    if library is None:
        problem = "needs libfaketime (apt-get install faketime, or IDEMPOTENCY_TEST_LIBFAKETIME)"
        if REQUIRE_SERVICES:
            pytest.fail(f"{problem}; IDEMPOTENCY_REQUIRE_SERVICES=1 forbids skipping")
        pytest.skip(problem)
    return library


@pytest.fixture(scope="module")
def servers(
    libfaketime: Path, django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, LiveServer]]:
    """One gunicorn per clock in ``CLOCKS``, started together, stopped however the tests end."""
    logs = tmp_path_factory.mktemp("gunicorn")
    with ExitStack() as stack:
        started = {}
        for name, seconds in CLOCKS.items():
            server = start_gunicorn(
                log=logs / f"{name}.log",
                storage="database",
                lease=LEASE_SECONDS,
                env=skewed_clock_env(libfaketime, seconds),
            )
            stack.callback(server.stop)
            started[name] = server
        for server in started.values():
            server.wait_until_ready()
        yield started


@pytest.mark.parametrize(
    ("owner_clock", "duplicate_clock"),
    [("behind", "true"), ("true", "ahead"), ("ahead", "true"), ("true", "behind")],
    ids=["claimed-behind", "duplicate-ahead", "claimed-ahead", "duplicate-behind"],
)
def test_lease__duplicate_on_a_server_with_another_clock_never_takes_over(
    servers: dict[str, LiveServer], owner_clock: str, duplicate_clock: str, tmp_path: Path
) -> None:
    owner_server, duplicate_server = servers[owner_clock], servers[duplicate_clock]
    offsets = {name: round(clock_offset(servers[name])) for name in (owner_clock, duplicate_clock)}
    for name, offset in offsets.items():
        assert abs(offset - CLOCKS[name]) <= OFFSET_TOLERANCE_SECONDS, offsets
    key, body = f"key-{uuid.uuid4()}", {"amount": 100, "order": uuid.uuid4().hex}
    ledger, gate = tmp_path / "ledger", tmp_path / "gate"

    with ThreadPoolExecutor(max_workers=1) as pool:
        owner = pool.submit(charge, owner_server, key, body, ledger, gate)
        try:
            started = Path(f"{gate}.started")
            deadline = time.monotonic() + REQUEST_SECONDS
            while not started.exists():
                assert not owner.done(), f"the owner answered before its gate: {owner.result()}"
                assert time.monotonic() < deadline, owner_server.log_tail()
                time.sleep(0.01)
            duplicate = charge(duplicate_server, key, body, ledger)
            charges_while_in_flight = charges(ledger)
        finally:
            gate.touch()  # the owner's worker never stays at its gate
        first = owner.result(timeout=REQUEST_SECONDS)

    in_progress = IdempotencyKeyInProgress.default_code
    assert (duplicate.status, duplicate.problem_code, charges_while_in_flight) == (
        409,
        in_progress,
        1,
    ), f"duplicate: {duplicate}; owner: {first}"
    assert (first.status, first.replayed) == (201, False), first
    for name, server in servers.items():
        retry = charge(server, key, body, ledger)
        assert (retry.status, retry.replayed, retry.body) == (201, True, first.body), name
    assert charges(ledger) == 1
