"""A private Redis Sentinel topology for tests: one master, one replica, three sentinels.

Every process listens on a free loopback port and is stopped by its pid; the shared Redis is
never touched. The topology fails over on demand, by ``SENTINEL FAILOVER`` or by killing the
master, and says when it has settled again: the sentinels agree on one master, which has its
replica attached and in sync. Each wait is on such an observed state, with a bound.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_servers import RedisServer, free_port

SERVICE = "mymaster"
#: How soon the sentinels call an unanswering master down (their own default is 30 s).
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000
#: The bound of every wait for the topology to change or settle.
SETTLE_SECONDS = 60.0


def wait_for(what: str, condition: Callable[[], bool], seconds: float = SETTLE_SECONDS) -> None:
    """Poll ``condition`` until it holds; fail the test saying ``what`` did not happen."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass  # a server starting or going away: ask again
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {seconds} s")
        time.sleep(0.05)


class Sentinel:
    """One redis-sentinel process with a config file of its own."""

    def __init__(self, directory: Path, master_port: int) -> None:
        self.port = free_port()
        self.config = directory / f"sentinel-{self.port}.conf"
        self.config.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {directory}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail("redis-server is not on PATH")
        self.process = subprocess.Popen(
            [executable, str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def master(self) -> dict[str, Any]:
        with self.client() as client:
            return dict(client.sentinel_master(SERVICE))

    def master_port(self) -> int:
        with self.client() as client:
            address = client.sentinel_get_master_addr_by_name(SERVICE)
        return int(address[1])

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


class SentinelTopology:
    """Two redis-servers (a master and its replica) watched by three sentinels."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        first = RedisServer()
        second = RedisServer(replica_of=first.port)
        self.servers = {first.port: first, second.port: second}
        self.sentinels = [Sentinel(directory, first.port) for _ in range(3)]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The sentinels' addresses, as django-redis's ``SENTINELS`` option takes them."""
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    def start(self) -> None:
        for server in self.servers.values():
            server.start()
        for sentinel in self.sentinels:
            sentinel.start()
        self.wait_until_settled()

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers.values():
            server.stop()

    def master_port(self) -> int:
        """The port of the master the sentinels name now."""
        return self.sentinels[0].master_port()

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2)

    def role(self, port: int) -> str:
        with self.client(port) as client:
            return str(client.execute_command("ROLE")[0].decode())

    def replica_port(self) -> int:
        (port,) = (port for port in self.servers if port != self.master_port())
        return port

    def is_settled(self) -> bool:
        """Every sentinel names one master; it is one, and its replica is attached, in sync."""
        ports = {sentinel.master_port() for sentinel in self.sentinels}
        if len(ports) != 1:
            return False
        (master,) = ports
        replica = next(port for port in self.servers if port != master)
        if self.role(master) != "master" or self.role(replica) != "slave":
            return False
        with self.client(replica) as client:
            info = client.info("replication")
        if info.get("master_port") != master or info.get("master_link_status") != "up":
            return False
        if info.get("master_sync_in_progress"):
            return False
        for sentinel in self.sentinels:
            seen = sentinel.master()
            if int(seen["num-slaves"]) != 1 or int(seen["num-other-sentinels"]) != 2:
                return False
            if seen["flags"] != "master":
                return False
        with self.client(master) as client:
            replicas = client.info("replication")
        return (
            int(replicas.get("connected_slaves", 0)) == 1
            and replicas.get("slave0", {}).get("state") == "online"
        )

    def wait_until_settled(self) -> None:
        wait_for("the Sentinel topology settling", self.is_settled)

    def fail_over(self) -> int:
        """Run ``SENTINEL FAILOVER``; return the new master's port once the sentinels name it.

        The old master still acts as one until the sentinels demote it, seconds later.
        """
        old = self.master_port()
        with self.sentinels[0].client() as client:
            client.sentinel_failover(SERVICE)
        wait_for("the failover", lambda: all(s.master_port() != old for s in self.sentinels))
        return self.master_port()

    def kill_master(self) -> tuple[int, int]:
        """Kill the master with SIGKILL; return its port and the new master's, once named."""
        old = self.master_port()
        self.servers[old].kill()
        wait_for("the failover", lambda: all(s.master_port() != old for s in self.sentinels))
        return old, self.master_port()

    def restart_as_replica(self, port: int) -> None:
        """Start the killed server again, empty, as the replica of the master named now."""
        server = RedisServer(port=port, replica_of=self.master_port())
        self.servers[port] = server
        server.start()
