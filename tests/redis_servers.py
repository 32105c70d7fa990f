"""Private redis-server processes for tests that stop or reconfigure Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import redis

REDIS_OPTIONS = {"SOCKET_CONNECT_TIMEOUT": 1, "SOCKET_TIMEOUT": 1}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def redis_cache_config(port: int, **options: Any) -> dict[str, Any]:
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{port}/0",
        "OPTIONS": {**REDIS_OPTIONS, **options},
    }


def caches_with(idempotency: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "idempotency": idempotency,
    }


class RedisServer:
    """A private redis-server, so tests may stop, pause, kill or reconfigure it freely.

    Without ``directory`` it persists nothing, so a restart comes back empty. With one it
    keeps an append-only file there, fsynced as ``appendfsync`` says, and a restart on the
    same directory reloads it.
    """

    def __init__(
        self,
        *,
        directory: Path | None = None,
        appendfsync: str = "always",
        port: int = 0,
        replica_of: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.directory = directory
        self.appendfsync = appendfsync
        #: The port of the master it replicates from when it starts, if any.
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None
        self.is_paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _persistence_arguments(self) -> list[str]:
        if self.directory is None:
            # A replica writes the snapshot its master sends into its directory: never
            # into the working directory of the tests.
            scratch = tempfile.mkdtemp(prefix="redis-server-")
            return ["--save", "", "--appendonly", "no", "--dir", scratch]
        return [
            "--save",
            "",
            "--dir",
            str(self.directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            self.appendfsync,
        ]

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            if os.environ.get("IDEMPOTENCY_REQUIRE_SERVICES") == "1":
                pytest.fail("redis-server is not on PATH")
            pytest.skip("needs the redis-server binary on PATH to start a private Redis")
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                *self._persistence_arguments(),
                *(["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server on port {self.port} did not start")
                time.sleep(0.05)
            finally:
                client.close()

    def pause(self) -> None:
        """Stall the server (SIGSTOP): connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.is_paused = True

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT); it then serves what it received."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.is_paused = False

    def kill(self) -> None:
        """Crash the server (SIGKILL): whatever it had not written to disk is gone."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
            self.is_paused = False

    def stop(self) -> None:
        if self.process is not None:
            if self.is_paused:
                self.resume()  # a stopped process would hold SIGTERM until continued
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
