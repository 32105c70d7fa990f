"""Records in Redis through django-redis: one hash per record, claimed and fenced by Lua scripts."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from django_idempotency.conf import idempotency_settings
from django_idempotency.storage.base import (
    ERASE_BATCH_SIZE,
    Census,
    Claim,
    Count,
    Origin,
    OwnershipLost,
    Record,
    Replaced,
    State,
    Storage,
    StorageUnavailable,
    StoredResponse,
    new_token,
)
from django_idempotency.storage.cache_config import redis_cache, redis_client
from django_idempotency.storage.cache_replicas import ACKNOWLEDGED, run_acknowledged
from django_idempotency.storage.cache_scripts import SCRIPTS

try:
    import django_redis  # type: ignore[import-untyped]  # noqa: F401  (needed, said below)
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImproperlyConfigured(
        "CacheStorage needs django-redis: pip install 'django-idempotency[redis]'."
    ) from exc

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

_UNAVAILABLE = "the idempotency cache did not answer"
#: How many records a census looks at, at most; how many keys one SCAN call asks for; and
#: how many SCAN calls it makes at most, in a database that holds other keys besides.
CENSUS_SAMPLE = 10_000
_SCAN_COUNT = 1000
_SCAN_CALLS = 100


class CacheStorage(Storage):
    """Keep records in a django-redis cache; expiry is Redis's own TTL on each record."""

    is_transactional = False
    #: How long a record's tombstone outlives it. While it does, a claim of the dead key
    #: says what it took over: a request that never finished (``taken_over``) or a retry
    #: after ``IDEMPOTENCY_TTL`` (``expired``). ``0``, the default, keeps no tombstones;
    #: each costs a small key per record (docs/observability.md, "Retries after expiry").
    tombstone = timedelta(0)
    #: How many replicas must hold each claim and completion before it counts as done
    #: (Redis's ``WAIT``, sent with it), so that a failover cannot lose it; ``0``, the
    #: default, waits for none (docs/scale.md, "Redis Sentinel").
    replicas = 0
    #: How long one claim or completion waits for those replicas.
    replica_timeout = timedelta(milliseconds=250)
    #: How long it keeps trying, each time on the master Sentinel then names, before it
    #: is ``StorageUnavailable``: a claim answers ``503``, a completion is logged.
    replica_deadline = timedelta(seconds=3)

    def __init__(
        self,
        alias: str | None = None,
        *,
        clock: Callable[[], datetime] = timezone.now,
        tombstone: timedelta | None = None,
        replicas: int | None = None,
        replica_timeout: timedelta | None = None,
        replica_deadline: timedelta | None = None,
    ) -> None:
        self._alias = alias
        self.clock = clock
        if tombstone is not None:
            self.tombstone = tombstone
        if replicas is not None:
            self.replicas = replicas
        if replica_timeout is not None:
            self.replica_timeout = replica_timeout
        if replica_deadline is not None:
            self.replica_deadline = replica_deadline
        _refuse_bad_replica_options(self)
        self._scripts: dict[str, Script] = {}
        self._scripts_lock = threading.Lock()

    @property
    def alias(self) -> str:
        return self._alias or idempotency_settings.CACHE_ALIAS

    def record_key(self, scope: str, key: str) -> str:
        """Return the Redis key of the record for (scope, key)."""
        return self._name("idempotency", scope, key)

    def tombstone_key(self, scope: str, key: str) -> str:
        """Return the Redis key of the record's tombstone, in the record's hash slot."""
        # Not under "idempotency:", so a SCAN for records never finds a tombstone.
        return self._name("idempotency-tombstone", scope, key)

    def _name(self, namespace: str, scope: str, key: str) -> str:
        # The length prefix keeps ("a", "bc") and ("ab", "c") apart; the braces are the
        # Redis Cluster hash tag shared by every key of one record.
        digest = hashlib.sha256(f"{len(scope)}:{scope}{key}".encode()).hexdigest()
        prefix = redis_cache(self.alias).key_prefix
        return f"{prefix}:{namespace}:{{{digest}}}" if prefix else f"{namespace}:{{{digest}}}"

    def claim(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        *,
        lease: timedelta,
        origin: Origin = Origin(),
    ) -> Claim | Record:
        now = self.clock()
        token = new_token()
        reply = self._run(
            "claim",
            self._keys(scope, key),
            token,
            fingerprint,
            _milliseconds(lease),
            scope,
            key,
            origin.kind,
            origin.name,
            self._tombstone_ms(),
        )
        if int(reply[0]) == 1:
            replaced = None
            if len(reply) == 3:  # took over a record its tombstone remembers
                expired_for = timedelta(milliseconds=max(0, int(reply[2])))
                replaced = Replaced(State(reply[1].decode()), expired_for)
            return Claim(scope, key, fingerprint, token, now + lease, replaced=replaced)
        return _to_record(scope, key, reply[1:], now)

    def complete(
        self, claim: Claim, response: StoredResponse, *, ttl: timedelta, replayable: bool = True
    ) -> None:
        state = State.COMPLETED if replayable else State.NOT_REPLAYABLE
        headers = json.dumps([list(pair) for pair in response.headers])
        completed = self._run(
            "complete",
            self._keys(claim.scope, claim.key),
            claim.token,
            state.value,
            _milliseconds(ttl),
            response.status,
            headers,
            response.body if replayable else b"",
            self._tombstone_ms(),
        )
        if not completed:
            raise OwnershipLost("the claim ended before the view finished")

    def release(self, claim: Claim) -> bool:
        released = self._run("release", self._keys(claim.scope, claim.key), claim.token)
        return bool(released)

    def get(self, scope: str, key: str) -> Record | None:
        now = self.clock()
        reply = self._run("get", [self.record_key(scope, key)])
        return _to_record(scope, key, reply, now) if reply else None

    def census(self, *, sample: int = CENSUS_SAMPLE) -> Census:
        """Count records from a bounded ``SCAN``: exact if it saw every key, else at least.

        Redis removes a record when its TTL ends, so none is ever lease-expired or expired.
        """
        client = self._client()
        try:
            names, complete = self._scan(client, sample)
            pipeline = client.pipeline(transaction=False)
            for name in names:
                pipeline.hmget(name, "state", "lease")
                pipeline.pttl(name)
            replies = pipeline.execute()
        except (RedisError, OSError) as exc:
            raise StorageUnavailable(_UNAVAILABLE) from exc
        counts = dict.fromkeys(State, 0)
        oldest: timedelta | None = None
        for (raw_state, lease), pttl in zip(replies[::2], replies[1::2], strict=True):
            if raw_state is None:  # expired between the SCAN and the read
                continue
            state = State(raw_state.decode())
            counts[state] += 1
            if state is State.IN_FLIGHT and lease is not None and int(pttl) >= 0:
                ran = timedelta(milliseconds=max(0, int(lease) - int(pttl)))
                oldest = ran if oldest is None else max(oldest, ran)
        kind: Literal["exact", "at_least"] = "exact" if complete else "at_least"
        return Census(
            in_flight=Count(counts[State.IN_FLIGHT], kind),
            lease_expired=Count(0),
            completed=Count(counts[State.COMPLETED], kind),
            not_replayable=Count(counts[State.NOT_REPLAYABLE], kind),
            expired=Count(0),
            oldest_in_flight=oldest,
            sampled=len(names),
        )

    def erase_scope(self, scope: str, *, batch_size: int = ERASE_BATCH_SIZE) -> Iterator[int]:
        """Delete the scope's records, found by a ``SCAN`` of every record (see ``_ERASE``).

        The scan walks the whole keyspace in steps of about ``batch_size`` names, without
        blocking Redis; its cost grows with the number of records of every scope.
        """
        for keys in self._of_scope(scope, batch_size):
            # SCAN's COUNT is a hint: a small keyspace comes back in one page.
            for start in range(0, len(keys), batch_size):
                batch = keys[start : start + batch_size]
                yield sum(int(self._run("erase", self._keys(scope, key), scope)) for key in batch)

    def count_scope(self, scope: str) -> Count:
        # SCAN may return a name twice; each record counts once.
        found = {key for keys in self._of_scope(scope, ERASE_BATCH_SIZE) for key in keys}
        return Count(len(found))

    def _of_scope(self, scope: str, batch_size: int) -> Iterator[list[str]]:
        """Yield the keys of the scope's records, a non-empty page at a time."""
        client = self._client()
        wanted = scope.encode()
        try:
            for page, _last in self._pages(client, batch_size):
                pipeline = client.pipeline(transaction=False)
                for name in page:
                    pipeline.hmget(name, "scope", "key")
                fields = pipeline.execute()
                keys = [key.decode() for found, key in fields if found == wanted and key]
                if keys:
                    yield keys
        except (RedisError, OSError) as exc:
            raise StorageUnavailable(_UNAVAILABLE) from exc

    def _scan(self, client: Redis, sample: int) -> tuple[list[bytes | str], bool]:
        """Return the names of up to ``sample`` records, and whether they are all of them."""
        names: set[bytes | str] = set()  # SCAN may return a key twice
        for calls, (page, last) in enumerate(self._pages(client, _SCAN_COUNT), start=1):
            names.update(page)
            if len(names) > sample:
                break
            if last:
                return sorted(names), True
            if calls == _SCAN_CALLS:
                break
        return sorted(names)[:sample], False

    def _pages(self, client: Redis, count: int) -> Iterator[tuple[list[bytes | str], bool]]:
        """Yield the records' names one ``SCAN`` call at a time, and whether it was the last.

        A name may come twice (SCAN's guarantee); a page may be empty.
        """
        pattern = _glob_escape(self.record_key("", "").rsplit(":", 1)[0]) + ":*"
        cursor = 0
        while True:
            cursor, found = client.scan(cursor, match=pattern, count=count)
            yield list(found), cursor == 0
            if cursor == 0:
                return

    def _keys(self, scope: str, key: str) -> list[str]:
        """Return the names a script of one record touches: the record and its tombstone."""
        return [self.record_key(scope, key), self.tombstone_key(scope, key)]

    def _tombstone_ms(self) -> int:
        return int(self.tombstone / timedelta(milliseconds=1))

    def _client(self) -> Redis:
        """Return the raw redis-py client behind the alias, which never swallows errors."""
        return redis_client(self.alias)

    def _run(self, name: str, keys: list[str], *args: str | int | bytes) -> Any:
        """Run one script against one record (and its tombstone) in one round trip."""
        if self.replicas and name in ACKNOWLEDGED:
            return run_acknowledged(
                self._client,
                name,
                keys,
                args,
                replicas=self.replicas,
                timeout_ms=_milliseconds(self.replica_timeout),
                deadline_seconds=self.replica_deadline.total_seconds(),
                sha=self._script(name, self._client()).sha,
            )
        client = self._client()
        try:
            return self._script(name, client)(keys=keys, args=args, client=client)
        except (RedisError, OSError) as exc:
            # "Unavailable" means "unknown", not "did not happen": a stalled Redis runs the
            # script it received once it resumes, and a pool told to retry sends it again.
            # Each script is safe to run late or twice (it acts only for its own token), so
            # the caller must keep treating the key as held (docs/storage-cache.md, "Faults").
            raise StorageUnavailable(_UNAVAILABLE) from exc

    def _script(self, name: str, client: Redis) -> Script:
        script = self._scripts.get(name)
        if script is None:
            with self._scripts_lock:
                script = self._scripts.get(name)
                if script is None:
                    # Registering only hashes the text; the server loads it on first use.
                    script = self._scripts[name] = client.register_script(SCRIPTS[name])
        return script


def _refuse_bad_replica_options(storage: CacheStorage) -> None:
    """Refuse replica options that could not mean what they say, naming the one at fault."""
    replicas = storage.replicas
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
        raise ImproperlyConfigured(
            f"CacheStorage.replicas is {replicas!r}; it must be a whole number of replicas, "
            "0 or more."
        )
    for name in ("replica_timeout", "replica_deadline"):
        value = getattr(storage, name)
        if not isinstance(value, timedelta) or value <= timedelta(0):
            raise ImproperlyConfigured(
                f"CacheStorage.{name} is {value!r}; it must be a positive timedelta."
            )
    if storage.replica_deadline < storage.replica_timeout:
        raise ImproperlyConfigured(
            "CacheStorage.replica_deadline is shorter than replica_timeout, so a claim would "
            "give up before its first wait for the replicas ended."
        )


def _milliseconds(duration: timedelta) -> int:
    # PX refuses zero and negatives; a non-positive duration means "expire at once".
    return max(1, int(duration / timedelta(milliseconds=1)))


def _glob_escape(text: str) -> str:
    """Escape the characters a ``SCAN MATCH`` pattern reads as wildcards."""
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _to_record(scope: str, key: str, fields: Sequence[Any], now: datetime) -> Record:
    raw_state, fingerprint, token, status, headers, body, pttl = fields
    state = State(raw_state.decode())
    response = None
    if state is not State.IN_FLIGHT and status:
        response = StoredResponse(
            status=int(status),
            headers=tuple((str(name), str(value)) for name, value in json.loads(headers or "[]")),
            body=bytes(body),
        )
    return Record(
        scope=scope,
        key=key,
        state=state,
        fingerprint=fingerprint.decode(),
        token=token.decode(),
        # A record without a TTL (someone PERSISTed it) has no expiry to report; "now"
        # is the honest lower bound.
        expires_at=now + timedelta(milliseconds=max(0, int(pttl))),
        response=response,
    )
