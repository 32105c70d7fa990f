"""Start a live gunicorn on the PostgreSQL test database, wait until it serves, and stop it.

The live tests (worker processes, Redis faults, properties, clock skew) each run one or more
gunicorns with sync workers serving a settings module under ``tests/`` against the test
database that pytest-django created. This module owns how: the command line, the environment
``tests/live_settings.py`` reads, readiness (``/live/ready/`` answers and every worker is up),
the log, and the stop (SIGTERM to the master's pid, SIGKILL if it lingers).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.redis_servers import free_port

ROOT = Path(__file__).resolve().parent.parent
BOOT_SECONDS = 30.0
STOP_SECONDS = 10.0
#: Gunicorn's default worker timeout here: longer than the live tests' views sleep or wait at
#: a gate, since gunicorn must never be the one that kills a worker.
WORKER_TIMEOUT = 60
STORAGES = {
    "database": "django_idempotency.storage.DatabaseStorage",
    "cache": "django_idempotency.storage.CacheStorage",
}


@dataclass(frozen=True)
class LiveServer:
    """A running gunicorn master: its process, address, storage, worker count and log."""

    process: subprocess.Popen[bytes] = field(repr=False)
    url: str
    #: The key of ``STORAGES`` it serves with.
    storage: str
    workers: int
    log: Path = field(repr=False)

    def worker_pids(self) -> set[int]:
        """Return the pids of the master's live children (its workers)."""
        pids = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended while we looked
            # fields: state, ppid, ...; a zombie is a worker that already died.
            if int(fields[1]) == self.process.pid and fields[0] != "Z":
                pids.add(int(stat.parent.name))
        return pids

    def log_tail(self, characters: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-characters:]

    def is_serving(self) -> bool:
        """Say whether a worker answers ``/live/ready/`` now."""
        try:
            with urllib.request.urlopen(self.url + "/live/ready/", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def wait_until_ready(self, *, exclude: set[int] | None = None) -> set[int]:
        """Wait until all workers are up, none of them in ``exclude``, and one answers.

        Return the workers' pids; fail the test with the log when gunicorn exits or takes
        longer than ``BOOT_SECONDS``.
        """
        deadline = time.monotonic() + BOOT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            pids = self.worker_pids()
            if len(pids) == self.workers and not pids & (exclude or set()) and self.is_serving():
                return pids
            time.sleep(0.05)
        pytest.fail(f"gunicorn had no {self.workers} ready workers in time:\n{self.log_tail()}")

    def recycle_workers(self) -> None:
        """Replace every worker with a fresh one and wait until they all serve."""
        old = self.worker_pids()
        for pid in old:
            os.kill(pid, signal.SIGTERM)
        self.wait_until_ready(exclude=old)

    def stop(self) -> None:
        """Stop the master and its workers; kill them if they outlive ``STOP_SECONDS``."""
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_SECONDS)


def start_gunicorn(
    *,
    log: Path,
    storage: str,
    lease: float,
    workers: int = 1,
    settings_module: str = "tests.live_settings",
    worker_timeout: int = WORKER_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> LiveServer:
    """Start a gunicorn on the test database without waiting for it; ``env`` adds variables.

    Call it where pytest-django's test database exists (after ``django_db_setup``).
    """
    from django.db import connection

    port = free_port()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": settings_module,
        "IDEMPOTENCY_TEST_DATABASE": os.environ.get("IDEMPOTENCY_TEST_DATABASE", "postgres"),
        "IDEMPOTENCY_LIVE_DATABASE_NAME": connection.settings_dict["NAME"],
        "IDEMPOTENCY_LIVE_STORAGE": STORAGES[storage],
        "IDEMPOTENCY_LIVE_LEASE": str(lease),
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        f"--bind=127.0.0.1:{port}",
        f"--workers={workers}",
        "--worker-class=sync",
        f"--timeout={worker_timeout}",
        "--graceful-timeout=2",
        "--preload",
        "--log-level=warning",
        "django.core.wsgi:get_wsgi_application()",
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=output, stderr=output)
    return LiveServer(process, f"http://127.0.0.1:{port}", storage, workers, log)


@contextmanager
def live_gunicorn(
    *,
    log: Path,
    storage: str,
    lease: float,
    workers: int = 1,
    settings_module: str = "tests.live_settings",
    worker_timeout: int = WORKER_TIMEOUT,
    env: Mapping[str, str] | None = None,
) -> Iterator[LiveServer]:
    """Run a ready gunicorn for the block and stop it however the block ends."""
    server = start_gunicorn(
        log=log,
        storage=storage,
        lease=lease,
        workers=workers,
        settings_module=settings_module,
        worker_timeout=worker_timeout,
        env=env,
    )
    try:
        server.wait_until_ready()
        yield server
    finally:
        server.stop()
