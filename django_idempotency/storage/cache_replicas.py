"""Claims and completions that count only once replicas hold them: ``WAIT``, and retries.

Redis replicates asynchronously: a claim or a completion its master acknowledged can be lost
in a failover, and a retry then runs the view a second time (docs/scale.md, "Redis
Sentinel"). With ``CacheStorage.replicas`` set, each claim and completion is sent with a
``WAIT`` on the same connection, and counts as done only once that many replicas hold it.
One that is not held in time is sent again, each time to the master Redis Sentinel then
names, until ``replica_deadline``; then it is ``StorageUnavailable``, as any unanswered write.

Sending it again is safe: each script answers its own token's second copy as it answered the
first, and rewrites one field of the record it finds, so that the ``WAIT`` after it covers
the write it repeats (a ``WAIT`` waits for the writes of its own connection only).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError, RedisError

from django_idempotency.storage.base import StorageUnavailable
from django_idempotency.storage.cache_scripts import SCRIPTS

if TYPE_CHECKING:
    from redis import Redis

#: The writes a failover must not lose, and how each one's reply says it wrote. The others
#: (a release, an erasure, an operator's drop) only ever free a key or forget a record:
#: losing one keeps a key held until its lease ends, which is the safe direction.
ACKNOWLEDGED: dict[str, Callable[[Any], bool]] = {
    "claim": lambda reply: int(reply[0]) == 1,
    "complete": bool,
}
#: The first pause between two attempts; each doubles it, up to the longest.
FIRST_PAUSE = 0.05
LONGEST_PAUSE = 0.5


def run_acknowledged(
    client_of: Callable[[], Redis],
    name: str,
    keys: Sequence[str],
    args: Sequence[str | int | bytes],
    *,
    replicas: int,
    timeout_ms: int,
    deadline_seconds: float,
    sha: str,
) -> Any:
    """Run script ``name`` until ``replicas`` replicas hold what it wrote; return its reply.

    A reply that wrote nothing (a record that stops the claim, a completion refused) needs
    no acknowledgement. ``StorageUnavailable`` once ``deadline_seconds`` have passed.
    """
    deadline = time.monotonic() + deadline_seconds
    pause = FIRST_PAUSE
    while True:
        client = client_of()
        cause: Exception | None = None
        try:
            reply, acknowledged = _send(client, name, keys, args, replicas, timeout_ms, sha)
        except (RedisError, OSError) as exc:
            cause = exc
            problem = f"the {name} did not reach a master ({exc})"
        else:
            if not ACKNOWLEDGED[name](reply) or int(acknowledged) >= replicas:
                return reply
            problem = f"{acknowledged} of {replicas} replicas acknowledged the {name}"
        if time.monotonic() + pause >= deadline:
            raise StorageUnavailable(
                f"the idempotency cache could not keep the {name} on {replicas} "
                f"replica(s) in time: {problem}"
            ) from cause
        _ask_for_the_master(client)
        time.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


def _send(
    client: Redis,
    name: str,
    keys: Sequence[str],
    args: Sequence[str | int | bytes],
    replicas: int,
    timeout_ms: int,
    sha: str,
) -> tuple[Any, Any]:
    """Send the script and its ``WAIT`` on one connection, in one round trip."""
    try:
        return _pipelined(client, sha, keys, args, replicas, timeout_ms)
    except NoScriptError:
        # A master new since the last call (a failover, a restart) has not seen the script.
        client.script_load(SCRIPTS[name])
        return _pipelined(client, sha, keys, args, replicas, timeout_ms)


def _pipelined(
    client: Redis,
    sha: str,
    keys: Sequence[str],
    args: Sequence[str | int | bytes],
    replicas: int,
    timeout_ms: int,
) -> tuple[Any, Any]:
    pipeline = client.pipeline(transaction=False)
    pipeline.evalsha(sha, len(keys), *keys, *args)
    pipeline.execute_command("WAIT", replicas, timeout_ms)  # type: ignore[no-untyped-call]
    reply, acknowledged = pipeline.execute()
    return reply, acknowledged


def _ask_for_the_master(client: Redis) -> None:
    """Make the next attempt connect to the master Sentinel names now, if it names one.

    A Sentinel pool asks only when it opens a connection, so after a failover its idle
    connections keep writing to the old master until that one is demoted (about ten
    seconds with ``SENTINEL FAILOVER``); asking drops them once the master has changed.
    Without Sentinel there is nothing to ask: the next attempt goes to the same server.
    """
    ask = getattr(client.connection_pool, "get_master_address", None)
    if callable(ask):
        # When no Sentinel answers, the next attempt fails and counts against the deadline.
        with contextlib.suppress(RedisError, OSError):
            ask()
