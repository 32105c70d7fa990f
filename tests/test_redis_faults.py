"""Redis faults under a live gunicorn with CacheStorage: what clients see, and when a view reruns.

A gunicorn with three sync workers serves ``tests.live_settings`` on the PostgreSQL test
database, its ``idempotency`` cache on a redis-server of the test's own. Each test starts that
server on the same port, sends an owner request to a gated view (it records its execution in
PostgreSQL, then waits until the test opens its gate), and hurts Redis while the owner runs:

- a **stall** (SIGSTOP, later SIGCONT), shorter or longer than the owner's lease;
- a **crash** (SIGKILL), restarted empty or from its append-only file.

Then it sends retries and counts the executions of each key. The assertions are the promises
(no second execution while the owner's lease lasts, 503 and never 500 while Redis is away, a
restarted empty Redis reruns exactly what it lost); the timings are measured, not asserted, and
written to ``$IDEMPOTENCY_FAULT_FIGURES`` when it is set (``python -m bench.redis_faults``
prints them as a table).

Requests are authenticated (HTTP Basic): the DRF mixin scopes them by user, the middleware by a
hash of the ``Authorization`` header.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from django.test import override_settings
from redis.backoff import AbstractBackoff
from redis.retry import Retry

from django_idempotency.exceptions import IdempotencyKeyInProgress, IdempotencyStoreUnavailable
from django_idempotency.storage import CacheStorage, Claim, State, StorageUnavailable
from django_idempotency.storage.base import StoredResponse
from tests.live_server import LiveServer, live_gunicorn
from tests.live_urls import GATE_HEADER, OUTCOME_HEADER
from tests.redis_servers import RedisServer, caches_with, free_port, redis_cache_config
from tests.testapp.models import Execution

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]

WORKERS = 3
#: The lease of the gated views: every stall below is much shorter.
LEASE = 20.0
#: The lease of the ``short-lease/`` gated views: the long stall outlasts it.
SHORT_LEASE = 3.0
#: After this long a stalled Redis counts as unavailable (connect and read alike).
SOCKET_TIMEOUT = 0.5
WORKER_TIMEOUT = 120
REQUEST_SECONDS = 30.0
ENTRY_POINTS = ["plain", "drf"]
USERNAME, PASSWORD = "payer", "pw"
FIGURES_ENV = "IDEMPOTENCY_FAULT_FIGURES"


@dataclass(frozen=True)
class Answer:
    status: int
    replayed: bool
    body: bytes
    retry_after: str | None
    sent_at: float
    answered_at: float

    @property
    def ran(self) -> bool:
        """Whether this request ran the view (the gated view answers 201 or 500 if it did)."""
        return self.status in (201, 500) and not self.replayed

    @property
    def kind(self) -> str:
        """What the client got, in one word: ran, replay, in_progress, unavailable or other."""
        if self.replayed:
            return "replay"
        if self.ran:
            return "ran" if self.status == 201 else "failed"
        if self.status == 409 and _detail_is(self.body, IdempotencyKeyInProgress):
            return "in_progress"
        if self.status == 503 and _detail_is(self.body, IdempotencyStoreUnavailable):
            return "unavailable"
        return f"other:{self.status}"


def _detail_is(body: bytes, error: type[Any]) -> bool:
    # The middleware answers problem+json with a code; DRF renders {"detail": ...}.
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return bool(
        document.get("code") == error.default_code or document.get("detail") == error.default_detail
    )


@dataclass
class Rig:
    """The live gunicorn, the port of its Redis, and the gates of the running test."""

    server: LiveServer
    redis_port: int
    gates: Path
    authorization: str = ""
    opened: list[Path] = field(default_factory=list)
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=4))

    @property
    def url(self) -> str:
        return self.server.url

    def post(
        self, path: str, key: str, item: str, *, outcome: str = "created", gate: Path | None = None
    ) -> Answer:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "Authorization": self.authorization,
            OUTCOME_HEADER: outcome,
        }
        if gate is not None:
            headers[GATE_HEADER] = str(gate)
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps({"item": item}).encode(),
            headers=headers,
            method="POST",
        )
        sent_at = time.monotonic()
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
                status, header_map, body = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, header_map, body = error.code, error.headers, error.read()
        return Answer(
            status=status,
            replayed=header_map.get("Idempotent-Replayed") == "true",
            body=body,
            retry_after=header_map.get("Retry-After"),
            sent_at=sent_at,
            answered_at=time.monotonic(),
        )

    def start_owner(self, path: str, key: str, item: str) -> tuple[Future[Answer], Path, float]:
        """Send a gated request; return its answer to come, its gate, and when it started."""
        gate = self.gates / f"gate-{uuid.uuid4()}"
        owner = self.pool.submit(self.post, path, key, item, gate=gate)
        started = Path(f"{gate}.started")
        deadline = time.monotonic() + REQUEST_SECONDS
        while not started.exists():
            if owner.done():
                pytest.fail(f"the owner answered before its gate: {owner.result()}")
            assert time.monotonic() < deadline, f"the view never started:\n{self.log_tail()}"
            time.sleep(0.01)
        return owner, gate, time.monotonic()

    def open(self, gate: Path) -> None:
        gate.touch()
        self.opened.append(gate)

    def log_tail(self) -> str:
        return self.server.log_tail()


def executions(item: str) -> int:
    return Execution.objects.filter(label=item).count()


def new_item() -> tuple[str, str]:
    return f"key-{uuid.uuid4()}", f"item-{uuid.uuid4()}"


def retry_until_it_runs(rig: Rig, path: str, key: str, item: str, deadline: float) -> list[Answer]:
    """Send retries until one runs the view; every earlier one must find the key in flight."""
    answers = [rig.post(path, key, item)]
    while not answers[-1].ran:
        assert answers[-1].kind == "in_progress", answers[-1]
        assert time.monotonic() < deadline, "the key stayed in flight beyond its lease"
        time.sleep(0.05)
        answers.append(rig.post(path, key, item))
    return answers


@pytest.fixture(scope="module")
def live_rig(django_db_setup: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A gunicorn whose idempotency cache is a private Redis port; each test starts Redis."""
    redis_port = free_port()
    env = {
        "IDEMPOTENCY_LIVE_SHORT_LEASE": str(SHORT_LEASE),
        "IDEMPOTENCY_LIVE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "IDEMPOTENCY_LIVE_REDIS_SOCKET_TIMEOUT": str(SOCKET_TIMEOUT),
    }
    with live_gunicorn(
        log=tmp_path_factory.mktemp("gunicorn") / "gunicorn.log",
        storage="cache",
        lease=LEASE,
        workers=WORKERS,
        worker_timeout=WORKER_TIMEOUT,
        env=env,
    ) as server:
        rig = Rig(server, redis_port, tmp_path_factory.mktemp("g"))
        try:
            yield rig
        finally:
            rig.pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture
def rig(live_rig: Rig, django_user_model: Any) -> Iterator[Rig]:
    """The live rig for one test, with a Basic-authenticated user; opens its gates after."""
    django_user_model.objects.create_user(USERNAME, password=PASSWORD)
    token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    live_rig.authorization = f"Basic {token}"
    live_rig.opened.clear()
    yield live_rig
    for gate in live_rig.gates.glob("gate-*.started"):
        Path(str(gate).removesuffix(".started")).touch()  # no worker stays at a gate


def warm_up(rig: Rig) -> None:
    # A running Redis knows the scripts; one that does not answers a script sent before a
    # stall with NOSCRIPT after it, instead of running it late. Start from the usual case.
    key, item = new_item()
    assert rig.post("/live/gated/plain/", key, item).kind == "ran"


@pytest.fixture
def redis_server(rig: Rig) -> Iterator[RedisServer]:
    """The rig's Redis, without persistence: a restart comes back empty."""
    server = RedisServer(port=rig.redis_port)
    server.start()
    warm_up(rig)
    yield server
    server.stop()


@pytest.fixture
def persistent_redis_server(rig: Rig, tmp_path: Path) -> Iterator[RedisServer]:
    """The rig's Redis with an append-only file fsynced on every write."""
    server = RedisServer(port=rig.redis_port, directory=tmp_path, appendfsync="always")
    server.start()
    warm_up(rig)
    yield server
    server.stop()


@pytest.fixture
def record_figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Return a function that appends one measured run to ``$IDEMPOTENCY_FAULT_FIGURES``."""

    def record(**figures: Any) -> None:
        target = os.environ.get(FIGURES_ENV)
        if target:
            line = {"test": request.node.name, **figures}
            with open(target, "a") as output:
                output.write(json.dumps(line) + "\n")

    return record


def kinds(answers: list[Answer]) -> list[str]:
    return [answer.kind for answer in answers]


def offsets(answers: list[Answer], since: float) -> list[float]:
    return [round(answer.answered_at - since, 3) for answer in answers]


def assert_unavailable(answers: list[Answer]) -> None:
    # DESIGN §2.5: fail closed with 503 + Retry-After; never a 500, never the view.
    for answer in answers:
        assert answer.kind == "unavailable", answer
        assert answer.retry_after is not None


# Stalls: SIGSTOP while the owner runs, SIGCONT later.


@pytest.mark.postgres
@pytest.mark.parametrize("owner_finishes", ["after_the_stall", "during_the_stall"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_redis_stall_shorter_than_the_lease__no_retry_runs_the_view_again(
    rig: Rig,
    redis_server: RedisServer,
    record_figures: Callable[..., None],
    entry: str,
    owner_finishes: str,
) -> None:
    path = f"/live/gated/{entry}/"
    key, item = new_item()
    owner, gate, _ = rig.start_owner(path, key, item)

    redis_server.pause()
    stalled_at = time.monotonic()
    during = [rig.post(path, key, item) for _ in range(2)]
    if owner_finishes == "during_the_stall":
        # The owner's completion times out: it still answers its client.
        rig.open(gate)
        first = owner.result(timeout=REQUEST_SECONDS)
    redis_server.resume()
    resumed_at = time.monotonic()
    after = [rig.post(path, key, item)]
    if owner_finishes == "after_the_stall":
        rig.open(gate)
        first = owner.result(timeout=REQUEST_SECONDS)
    after += [rig.post(path, key, item) for _ in range(3)]

    record_figures(
        fault="stall shorter than the lease",
        entry=entry,
        owner_finishes=owner_finishes,
        lease=LEASE,
        socket_timeout=SOCKET_TIMEOUT,
        stall_seconds=round(resumed_at - stalled_at, 3),
        during=kinds(during),
        during_answered_after=[round(a.answered_at - a.sent_at, 3) for a in during],
        owner=first.kind,
        after=kinds(after),
        executions=executions(item),
    )

    assert after[-1].sent_at < first.sent_at + LEASE, "too slow to observe the lease"
    assert first.kind == "ran", first
    assert_unavailable(during)
    for answer in after:
        assert answer.kind in ("in_progress", "replay"), answer
        if answer.replayed:
            assert answer.body == first.body
    assert executions(item) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_redis_stall_longer_than_the_lease__a_retry_reruns_only_after_the_lease(
    rig: Rig, redis_server: RedisServer, record_figures: Callable[..., None], entry: str
) -> None:
    path = f"/live/gated/{entry}/short-lease/"
    key, item = new_item()
    owner, gate, started_at = rig.start_owner(path, key, item)

    redis_server.pause()
    stalled_at = time.monotonic()
    during = [rig.post(path, key, item)]
    # The claim was made before the view started, so its lease has ended by Redis's clock
    # (the machine's) once this much time has passed; waiting longer changes nothing.
    while time.monotonic() < started_at + SHORT_LEASE + 0.2:
        time.sleep(0.05)
    redis_server.resume()
    resumed_at = time.monotonic()
    after = retry_until_it_runs(rig, path, key, item, deadline=resumed_at + SHORT_LEASE + 10)
    rerun = after[-1]
    rig.open(gate)
    first = owner.result(timeout=REQUEST_SECONDS)
    later = rig.post(path, key, item)

    record_figures(
        fault="stall longer than the lease",
        entry=entry,
        lease=SHORT_LEASE,
        socket_timeout=SOCKET_TIMEOUT,
        stall_seconds=round(resumed_at - stalled_at, 3),
        during=kinds(during),
        after=kinds(after),
        rerun_after_resume=round(rerun.answered_at - resumed_at, 3),
        rerun_after_claim=round(rerun.answered_at - first.sent_at, 3),
        executions=executions(item),
    )

    assert_unavailable(during)
    # The lease ended during the stall: the takeover is by design, and never earlier.
    assert rerun.answered_at >= first.sent_at + SHORT_LEASE
    # The late owner still answers its client; its response is not stored.
    assert first.kind == "ran"
    assert (later.kind, later.body) == ("replay", rerun.body)
    assert executions(item) == 2


@pytest.mark.postgres
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_owner_completion_lost_in_a_stall__key_stays_in_flight_until_its_lease_ends(
    rig: Rig, redis_server: RedisServer, record_figures: Callable[..., None], entry: str
) -> None:
    path = f"/live/gated/{entry}/short-lease/"
    key, item = new_item()
    owner, gate, _ = rig.start_owner(path, key, item)
    # Drop the workers' connections first: the owner's completion must reconnect, which a
    # stalled Redis never answers, so the completion is lost rather than applied late.
    with redis.Redis(port=redis_server.port) as admin:
        admin.client_kill_filter(_type="normal", skipme=True)

    redis_server.pause()
    rig.open(gate)
    first = owner.result(timeout=REQUEST_SECONDS)
    redis_server.resume()
    resumed_at = time.monotonic()
    after = retry_until_it_runs(rig, path, key, item, deadline=resumed_at + SHORT_LEASE + 10)
    rerun = after[-1]

    record_figures(
        fault="owner's completion lost in a stall",
        entry=entry,
        lease=SHORT_LEASE,
        socket_timeout=SOCKET_TIMEOUT,
        after=kinds(after),
        rerun_after_resume=round(rerun.answered_at - resumed_at, 3),
        rerun_after_claim=round(rerun.answered_at - first.sent_at, 3),
        executions=executions(item),
    )

    # The client got its response, though Redis never stored it.
    assert first.kind == "ran"
    assert after[0].sent_at < first.sent_at + SHORT_LEASE, "too slow to observe the lease"
    # The outcome is unknown to Redis: the key stays in flight until the lease ends.
    assert after[0].kind == "in_progress"
    assert rerun.answered_at >= first.sent_at + SHORT_LEASE
    assert executions(item) == 2


# Unknown outcomes: the view failed after its effects, with no stall at all.


@pytest.mark.postgres
@pytest.mark.parametrize("outcome", ["error", "raise"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_unknown_outcome_not_stored__key_stays_in_flight_until_its_lease_ends(
    rig: Rig,
    redis_server: RedisServer,
    record_figures: Callable[..., None],
    entry: str,
    outcome: str,
) -> None:
    # store_server_errors=False: the failure is not replayed, but the view may have had
    # effects (CacheStorage shares no transaction with it), so a retry waits for the lease.
    path = f"/live/gated/{entry}/unstored/"
    key, item = new_item()
    first = rig.post(path, key, item, outcome=outcome)
    after = retry_until_it_runs(rig, path, key, item, deadline=first.sent_at + SHORT_LEASE + 10)
    rerun = after[-1]

    record_figures(
        fault=f"view {outcome}, not stored",
        entry=entry,
        lease=SHORT_LEASE,
        after=kinds(after),
        rerun_after_claim=round(rerun.answered_at - first.sent_at, 3),
        executions=executions(item),
    )

    assert first.kind == "failed", first
    assert after[0].sent_at < first.sent_at + SHORT_LEASE, "too slow to observe the lease"
    assert after[0].kind == "in_progress", after[0]
    assert rerun.answered_at >= first.sent_at + SHORT_LEASE
    assert rerun.kind == "ran"
    assert executions(item) == 2


@pytest.mark.postgres
@pytest.mark.parametrize("outcome", ["error", "raise"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_unknown_outcome_stored__retries_replay_the_failure(
    rig: Rig, redis_server: RedisServer, entry: str, outcome: str
) -> None:
    path = f"/live/gated/{entry}/"
    key, item = new_item()
    first = rig.post(path, key, item, outcome=outcome)
    retries = [rig.post(path, key, item) for _ in range(2)]

    assert first.kind == "failed", first
    assert kinds(retries) == ["replay", "replay"]
    assert retries[0].status == 500
    assert executions(item) == 1


# Crashes: SIGKILL, then a restart on the same port.


@pytest.mark.postgres
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_redis_restarted_empty__every_key_it_held_reruns_once_and_no_other(
    rig: Rig, redis_server: RedisServer, record_figures: Callable[..., None], entry: str
) -> None:
    path = f"/live/gated/{entry}/"
    done_key, done_item = new_item()
    done = rig.post(path, done_key, done_item)
    running_key, running_item = new_item()
    owner, gate, _ = rig.start_owner(path, running_key, running_item)

    redis_server.kill()
    killed_at = time.monotonic()
    during = [rig.post(path, done_key, done_item), rig.post(path, running_key, running_item)]
    redis_server.start()
    restarted_at = time.monotonic()
    done_again = rig.post(path, done_key, done_item)
    running_again = rig.post(path, running_key, running_item)
    fresh_key, fresh_item = new_item()
    fresh = [rig.post(path, fresh_key, fresh_item), rig.post(path, fresh_key, fresh_item)]
    rig.open(gate)
    first = owner.result(timeout=REQUEST_SECONDS)
    later = [rig.post(path, done_key, done_item), rig.post(path, running_key, running_item)]

    record_figures(
        fault="restart without persistence",
        entry=entry,
        lease=LEASE,
        during=kinds(during),
        during_answered_after=[round(a.answered_at - a.sent_at, 3) for a in during],
        outage_seconds=round(restarted_at - killed_at, 3),
        after=kinds([done_again, running_again]),
        rerun_after_restart=offsets([done_again, running_again], restarted_at),
        executions=[executions(done_item), executions(running_item)],
    )

    assert done.kind == "ran"
    assert first.kind == "ran"
    assert_unavailable(during)
    # Everything Redis held is forgotten: the completed key and the running one rerun once.
    assert done_again.kind == "ran"
    assert running_again.kind == "ran"
    assert executions(done_item) == executions(running_item) == 2
    # What was claimed after the restart is protected again.
    assert kinds(fresh) == ["ran", "replay"]
    assert executions(fresh_item) == 1
    assert (later[0].body, later[1].body) == (done_again.body, running_again.body)
    assert kinds(later) == ["replay", "replay"]


@pytest.mark.postgres
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_redis_restarted_from_its_append_only_file__no_key_reruns(
    rig: Rig,
    persistent_redis_server: RedisServer,
    record_figures: Callable[..., None],
    entry: str,
) -> None:
    path = f"/live/gated/{entry}/"
    done_key, done_item = new_item()
    done = rig.post(path, done_key, done_item)
    running_key, running_item = new_item()
    owner, gate, _ = rig.start_owner(path, running_key, running_item)

    persistent_redis_server.kill()
    during = [rig.post(path, done_key, done_item), rig.post(path, running_key, running_item)]
    persistent_redis_server.start()
    restarted_at = time.monotonic()
    after = [rig.post(path, done_key, done_item), rig.post(path, running_key, running_item)]
    rig.open(gate)
    first = owner.result(timeout=REQUEST_SECONDS)
    later = rig.post(path, running_key, running_item)

    record_figures(
        fault="restart from appendonly yes, appendfsync always",
        entry=entry,
        lease=LEASE,
        during=kinds(during),
        after=kinds(after),
        answered_after_restart=offsets(after, restarted_at),
        executions=[executions(done_item), executions(running_item)],
    )

    assert done.kind == "ran"
    assert first.kind == "ran"
    assert_unavailable(during)
    assert after[1].sent_at < first.sent_at + LEASE, "too slow to observe the lease"
    assert kinds(after) == ["replay", "in_progress"]  # the lease survived the restart too
    assert after[0].body == done.body
    assert (later.kind, later.body) == ("replay", first.body)
    assert executions(done_item) == executions(running_item) == 1


# The same faults seen by CacheStorage alone: what a timed-out script leaves in Redis.

LONG = timedelta(seconds=30)
RESPONSE = StoredResponse(201, (("Content-Type", "application/json"),), b'{"id": 7}')


@pytest.fixture
def stalled_storage(tmp_path: Path) -> Iterator[tuple[CacheStorage, RedisServer]]:
    server = RedisServer(directory=tmp_path, appendfsync="always")
    server.start()
    config = redis_cache_config(server.port, SOCKET_TIMEOUT=SOCKET_TIMEOUT)
    try:
        with override_settings(CACHES=caches_with(config)):
            storage = CacheStorage("idempotency")
            # Load every script, as a running server has: a script that Redis does not
            # know yet fails with NOSCRIPT instead of running late.
            completed = storage.claim("warm", "completed", "fp", lease=LONG)
            released = storage.claim("warm", "released", "fp", lease=LONG)
            assert isinstance(completed, Claim)
            assert isinstance(released, Claim)
            storage.complete(completed, RESPONSE, ttl=LONG)
            assert storage.release(released)
            assert storage.get("warm", "completed") is not None
            yield storage, server
    finally:
        server.stop()


def test_claim__timed_out_in_a_stall_is_applied_on_resume_and_holds_the_key(
    stalled_storage: tuple[CacheStorage, RedisServer],
) -> None:
    storage, server = stalled_storage

    server.pause()
    with pytest.raises(StorageUnavailable):
        storage.claim("scope", "k", "fp", lease=LONG)
    server.resume()

    # Redis ran the script it had received, for a client that had given up: the key is
    # held by a token nobody has, so retries get 409 until that lease ends, never a rerun.
    record = storage.get("scope", "k")
    assert record is not None
    assert record.is_in_flight
    assert not isinstance(storage.claim("scope", "k", "fp", lease=LONG), Claim)


def test_complete__timed_out_in_a_stall_is_applied_on_resume(
    stalled_storage: tuple[CacheStorage, RedisServer],
) -> None:
    storage, server = stalled_storage
    owner = storage.claim("scope", "k", "fp", lease=LONG)
    assert isinstance(owner, Claim)

    server.pause()
    with pytest.raises(StorageUnavailable):
        storage.complete(owner, RESPONSE, ttl=LONG)
    server.resume()

    record = storage.get("scope", "k")
    assert record is not None
    assert (record.state, record.response) == (State.COMPLETED, RESPONSE)


def test_restart_from_append_only_file__keeps_records_and_the_lease_of_each(
    stalled_storage: tuple[CacheStorage, RedisServer],
) -> None:
    storage, server = stalled_storage
    running = storage.claim("scope", "running", "fp", lease=LONG)
    claimed_at = time.monotonic()
    done = storage.claim("scope", "done", "fp", lease=LONG)
    assert isinstance(running, Claim)
    assert isinstance(done, Claim)
    storage.complete(done, RESPONSE, ttl=timedelta(hours=1))

    server.kill()
    server.start()

    kept = storage.get("scope", "running")
    assert kept is not None
    assert (kept.state, kept.token) == (State.IN_FLIGHT, running.token)
    # The file holds the absolute expiry: the lease did not start again at the restart
    # (1 ms for Redis's millisecond clock).
    with redis.Redis(port=server.port) as client:
        asked_at = time.monotonic()
        remaining = client.pttl(storage.record_key("scope", "running")) / 1000
    assert remaining <= LONG.total_seconds() - (asked_at - claimed_at) + 0.001
    completed = storage.get("scope", "done")
    assert completed is not None
    assert completed.response == RESPONSE


class _ResumeOnFirstFailure(AbstractBackoff):
    """A redis-py backoff that lets a paused Redis run again once a command timed out."""

    def __init__(self, pid: int) -> None:
        self.pid = pid  # a number, since redis-py deep-copies its Retry per connection

    def compute(self, failures: int) -> float:
        if failures == 1:
            os.kill(self.pid, signal.SIGCONT)
        return 0.0


def evalsha_calls(port: int) -> int:
    with redis.Redis(port=port) as client:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


def test_scripts__resent_by_redis_py_after_a_timeout_run_twice_and_keep_one_owner() -> None:
    # redis-py re-sends a command after a timeout only when the pool is told to retry
    # (django-redis's pools do not by default). The first copy was delivered, so Redis runs
    # both: each script must find its own token and answer as the first copy did.
    server = RedisServer()
    server.start()
    assert server.process is not None
    retry = Retry(_ResumeOnFirstFailure(server.process.pid), retries=1)
    config = redis_cache_config(
        server.port, SOCKET_TIMEOUT=SOCKET_TIMEOUT, CONNECTION_POOL_KWARGS={"retry": retry}
    )
    try:
        with override_settings(CACHES=caches_with(config)):
            storage = CacheStorage("idempotency")
            warm = storage.claim("warm", "k", "fp", lease=LONG)
            assert isinstance(warm, Claim)
            storage.complete(warm, RESPONSE, ttl=LONG)  # both scripts are loaded now

            before = evalsha_calls(server.port)
            server.pause()
            owner = storage.claim("scope", "k", "fp", lease=LONG)
            after_claim = evalsha_calls(server.port)
            assert isinstance(owner, Claim)
            server.pause()
            storage.complete(owner, RESPONSE, ttl=LONG)
            after_complete = evalsha_calls(server.port)

            # Each script ran twice: the copy that timed out, and the one sent again.
            assert after_claim - before == 2
            assert after_complete - after_claim == 2
            record = storage.get("scope", "k")
            assert record is not None
            assert (record.state, record.token) == (State.COMPLETED, owner.token)
            assert record.response == RESPONSE
            assert not isinstance(storage.claim("scope", "k", "fp", lease=LONG), Claim)
    finally:
        server.stop()
