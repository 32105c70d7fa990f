"""Test helpers for projects that use this app: replays, required keys, concurrent duplicates.

Usable from pytest and from Django's ``TestCase``; the pytest plugin
(``django_idempotency.pytest_plugin``, registered as an entry point) offers them as fixtures
(docs/testing.md). Each helper sends real requests through Django's test client, so what it
asserts is what the project's own views, middleware and settings do.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper
from django.test import Client

from django_idempotency.conf import idempotency_settings
from django_idempotency.outcomes import TELLINGS, Outcome
from django_idempotency.responses import REPLAYED_HEADER

#: The outcomes of a claim that runs the view.
RUNS = frozenset({Outcome.CLAIMED, Outcome.TAKEN_OVER, Outcome.EXPIRED})


def new_key() -> str:
    """Return a fresh key, as a client makes one per operation."""
    return str(uuid.uuid4())


def post(
    client: Client,
    path: str,
    data: Any = None,
    *,
    key: str | None,
    content_type: str = "application/json",
    **extra: Any,
) -> Any:
    """POST ``data`` (JSON unless ``content_type`` says otherwise) with the key, if any."""
    headers = dict(extra.pop("headers", {}))
    if key is not None:
        headers[idempotency_settings.HEADER] = key
    body = json.dumps(data) if content_type == "application/json" and data is not None else data
    return client.post(path, body, content_type=content_type, headers=headers, **extra)


def assert_replays(
    client: Client, path: str, data: Any = None, *, key: str | None = None, **extra: Any
) -> tuple[Any, Any]:
    """Send the same keyed request twice; assert the second is a faithful replay of the first.

    Returns both responses. A faithful replay has the same status and body bytes, says
    ``Idempotent-Replayed: true``, and did not run the view again.
    """
    key = key or new_key()
    with outcomes() as seen:
        first = post(client, path, data, key=key, **extra)
        replay = post(client, path, data, key=key, **extra)
    assert first.headers.get(REPLAYED_HEADER) is None, "the first request was a replay"
    assert replay.headers.get(REPLAYED_HEADER) == "true", (
        f"the retry was not replayed: {replay.status_code} {replay.content[:200]!r}"
    )
    assert replay.status_code == first.status_code, (first.status_code, replay.status_code)
    assert replay.content == first.content, "the replay's body differs from the first's"
    assert seen.runs == 1, f"the view ran {seen.runs} times"
    return first, replay


def assert_requires_key(client: Client, path: str, data: Any = None, **extra: Any) -> Any:
    """Send the request without a key; assert it is refused with ``idempotency_key_missing``."""
    with outcomes() as seen:
        response = post(client, path, data, key=None, **extra)
    assert response.status_code == 400, f"answered {response.status_code}, not 400"
    assert error_code(response) == "idempotency_key_missing", response.content[:200]
    assert seen.runs == 0, "the view ran without a key"
    return response


def error_code(response: Any) -> str | None:
    """Return the stable error code of an idempotency error response, from any entry point."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("code") if isinstance(body, dict) else None


@dataclass
class Seen:
    """The outcomes the engine reported while a helper listened."""

    outcomes: list[Outcome] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def runs(self) -> int:
        """How many times a view ran: claims, takeovers and claims of expired keys."""
        return sum(1 for outcome in self.outcomes if outcome in RUNS)

    def add(self, sender: Any, **kwargs: Any) -> None:
        with self._lock:
            self.outcomes.append(kwargs["outcome"])


@contextmanager
def outcomes() -> Iterator[Seen]:
    """Listen to every outcome signal while the block runs (from any thread)."""
    seen = Seen()
    for telling in TELLINGS.values():
        telling.signal.connect(seen.add, weak=False, dispatch_uid=f"testing:{id(seen)}")
    try:
        yield seen
    finally:
        for telling in TELLINGS.values():
            telling.signal.disconnect(dispatch_uid=f"testing:{id(seen)}")


@dataclass(frozen=True)
class Duplicates:
    """What N concurrent duplicates of one request got: statuses, replays, and view runs."""

    statuses: Counter[int]
    replayed: int
    runs: int
    responses: list[Any]


def fire_duplicates(
    path: str,
    data: Any = None,
    *,
    n: int = 10,
    key: str | None = None,
    client_factory: Callable[[], Client] = Client,
    **extra: Any,
) -> Duplicates:
    """Send ``n`` copies of one keyed request at once, from ``n`` threads; report what happened.

    Each thread has its own client from ``client_factory`` (sign each in as the same user);
    all wait on a barrier and send together. Run it where requests can see each other's
    writes: ``TransactionTestCase`` or ``pytest.mark.django_db(transaction=True)``.
    """
    key = key or new_key()
    clients = [client_factory() for _ in range(n)]
    barrier = threading.Barrier(n)
    responses: list[Any] = [None] * n
    errors: list[BaseException] = []

    def send(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            responses[index] = post(clients[index], path, data, key=key, **extra)
        except BaseException as exc:  # reported below, in the caller's thread
            errors.append(exc)
        finally:
            close_thread_connections()

    with outcomes() as seen:
        threads = [threading.Thread(target=send, args=(index,)) for index in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    if errors:
        raise errors[0]
    return Duplicates(
        statuses=Counter(response.status_code for response in responses),
        replayed=sum(1 for response in responses if response.headers.get(REPLAYED_HEADER)),
        runs=seen.runs,
        responses=responses,
    )


def close_thread_connections() -> None:
    """Close every database connection this thread opened, in-memory SQLite's included.

    Call it at the end of a thread a test starts. Django ignores ``close()`` on an in-memory
    SQLite connection, since closing the last one drops the database; a thread's connection
    is never the last (the test's own thread keeps the test database open). Left open, it is
    collected some time later, which Python 3.13 reports as ``ResourceWarning: unclosed
    database`` in whichever test runs then.
    """
    for connection in connections.all(initialized_only=True):
        if isinstance(connection, SQLiteDatabaseWrapper) and connection.is_in_memory_db():
            BaseDatabaseWrapper.close(connection)
        else:
            connection.close()
