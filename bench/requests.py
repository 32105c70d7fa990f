"""Per-request cost of idempotency keys: bare views against the same views behind the library.

Run from the repository root (``-m``, so this module never shadows the ``requests`` package)::

    .venv/bin/python -m bench.requests                  # SQLite and PostgreSQL, 2,000 each
    .venv/bin/python -m bench.requests -n 5000 --databases postgres --json results.json

Each database runs in its own process. Every variant is called through Django's own
``WSGIHandler`` with a prebuilt WSGI environ (no test client, no network), so the bare and the
idempotent requests share one harness and the ratio is this library's cost alone. Variants run
interleaved, in a shuffled order each round, to spread drift (CPU frequency, autovacuum, the
page cache) over all of them. The PostgreSQL database is created and dropped by the run.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.output import write_json

# Another name lets runs share a server without dropping each other's database.
PG_NAME = os.environ.get("BENCH_PG_NAME", "idempotency_bench")
MIDDLEWARE_PATH = "django_idempotency.middleware.IdempotencyMiddleware"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    label: str
    #: The bare variant this one is compared with.
    baseline: str
    path: str
    #: "none": no key; "first": a fresh key each request; "replay": a completed key.
    key: str = "none"
    #: Which handler serves it: "bare" (no middleware) or "middleware".
    handler: str = "bare"
    #: For a replay, the variant whose completed keys it replays.
    replays: str = ""
    needs_redis: bool = False


VARIANTS = (
    Variant("drf.bare", "DRF view, bare", "drf.bare", "/drf/bare/"),
    Variant("drf.bare.atomic", "DRF view, bare, in a transaction", "drf.bare", "/drf/bare-atomic/"),
    Variant("drf.mixin.first", "DRF + mixin, first request", "drf.bare", "/drf/mixin/", "first"),
    Variant(
        "drf.mixin.replay",
        "DRF + mixin, replay",
        "drf.bare",
        "/drf/mixin/",
        "replay",
        replays="drf.mixin.first",
    ),
    Variant(
        "drf.redis.first",
        "DRF + mixin (Redis), first request",
        "drf.bare",
        "/drf/mixin-redis/",
        "first",
        needs_redis=True,
    ),
    Variant(
        "drf.redis.replay",
        "DRF + mixin (Redis), replay",
        "drf.bare",
        "/drf/mixin-redis/",
        "replay",
        replays="drf.redis.first",
        needs_redis=True,
    ),
    Variant("plain.bare", "plain view, bare", "plain.bare", "/plain/"),
    Variant(
        "plain.middleware.nokey",
        "plain + middleware, no key",
        "plain.bare",
        "/plain/",
        handler="middleware",
    ),
    Variant(
        "plain.middleware.first",
        "plain + middleware, first request",
        "plain.bare",
        "/plain/",
        "first",
        handler="middleware",
    ),
    Variant(
        "plain.middleware.replay",
        "plain + middleware, replay",
        "plain.bare",
        "/plain/",
        "replay",
        handler="middleware",
        replays="plain.middleware.first",
    ),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.requests", description=__doc__)
    parser.add_argument(
        "-n", "--requests", type=int, default=2000, help="timed requests per variant"
    )
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per variant")
    parser.add_argument(
        "--databases", default="sqlite,postgres", help="comma-separated: sqlite, postgres"
    )
    parser.add_argument("--no-redis", action="store_true", help="skip the CacheStorage variants")
    parser.add_argument(
        "--synchronous-commit",
        default="on",
        choices=["on", "off", "local"],
        help="PostgreSQL's synchronous_commit for the run's sessions",
    )
    parser.add_argument(
        "--unflushed-claims",
        action="store_true",
        help="DatabaseStorage with flush_claims=False (PostgreSQL claims skip their WAL flush)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the per-round shuffle")
    parser.add_argument(
        "--json", metavar="PATH", help="also write the results as JSON ('-': stdout)"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="after timing, profile N more requests per variant and print where their time "
        "went, by package (cProfile's own time; it slows every call, so read the shares)",
    )
    parser.add_argument(
        "--profile-functions",
        type=int,
        default=0,
        metavar="K",
        help="with --profile, also print each variant's K costliest functions of this package "
        "(own time per request)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    return run_parent(args)


# The parent: one child process per database, then the table.


def run_parent(args: argparse.Namespace) -> int:
    databases = [name.strip() for name in args.databases.split(",") if name.strip()]
    redis_prefix = f"bench-{uuid.uuid4().hex[:12]}"
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "requests_per_variant": args.requests,
        "warmup_per_variant": args.warmup,
        "synchronous_commit": args.synchronous_commit,
        "unflushed_claims": args.unflushed_claims,
        "databases": {},
    }
    for database in databases:
        print(f"running {database} ({args.requests} requests per variant)...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="idempotency-bench-") as workdir:
            env = dict(os.environ)
            env.update(
                DJANGO_SETTINGS_MODULE="bench.settings",
                BENCH_DATABASE=database,
                BENCH_SQLITE_PATH=os.path.join(workdir, "bench.sqlite3"),
                BENCH_PG_NAME=PG_NAME,
                BENCH_REDIS_PREFIX=redis_prefix,
                BENCH_PG_SYNCHRONOUS_COMMIT=args.synchronous_commit,
                BENCH_UNFLUSHED_CLAIMS="1" if args.unflushed_claims else "",
            )
            output = os.path.join(workdir, "result.json")
            command = [
                sys.executable,
                "-m",
                "bench.requests",
                "--child",
                database,
                "--child-output",
                output,
                "-n",
                str(args.requests),
                "--warmup",
                str(args.warmup),
                "--seed",
                str(args.seed),
                "--profile",
                str(args.profile),
                "--profile-functions",
                str(args.profile_functions),
            ]
            if args.no_redis:
                command.append("--no-redis")
            if database == "postgres":
                _recreate_pg_database(PG_NAME)
            try:
                subprocess.run(command, env=env, check=True)
            finally:
                if database == "postgres":
                    _drop_pg_database(PG_NAME)
            with open(output) as file:
                results["databases"][database] = json.load(file)
    print_table(results)
    write_json(results, args.json)
    return 0


def _pg_admin_connection() -> Any:
    import psycopg

    return psycopg.connect(
        host=os.environ.get("PGHOST", "127.0.0.1"),
        port=os.environ.get("PGPORT", "5432"),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD", ""),
        dbname="postgres",
        autocommit=True,
    )


def _recreate_pg_database(name: str) -> None:
    with _pg_admin_connection() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')


def _drop_pg_database(name: str) -> None:
    with _pg_admin_connection() as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def print_table(results: dict[str, Any]) -> None:
    header = (
        f"{'database':<9} {'variant':<36} {'median ms':>10} {'p99 ms':>8} "
        f"{'x bare med':>10} {'x bare p99':>10} {'cpu ms':>7} {'queries':>7}"
    )
    print()
    print(
        f"{results['requests_per_variant']} timed requests per variant "
        f"(+{results['warmup_per_variant']} warm-up), {results['machine']['cpus']} CPUs, "
        f"Python {results['machine']['python']}"
    )
    for database, result in results["databases"].items():
        print(f"\n{database}: {result['server']}")
        print(header)
        print("-" * len(header))
        for row in result["variants"].values():
            print(
                f"{database:<9} {row['label']:<36} {row['median_ms']:>10.3f} {row['p99_ms']:>8.3f} "
                f"{row['ratio_median']:>10.2f} {row['ratio_p99']:>10.2f} "
                f"{row['cpu_median_ms']:>7.3f} {row['queries']:>7}"
            )
        print(
            "  cpu ms: median CPU time of the benchmark process per request (Python, the drivers'"
            " client side); the rest of 'median ms' is waiting for the database or Redis"
        )
        if result.get("floor_ms"):
            print_floor(result["floor_ms"], result["variants"])
        if result.get("profile"):
            print_profile(result["profile"])
        atomic = result["variants"].get("drf.bare.atomic")
        if atomic:
            print(
                "  against the bare view in a transaction (as with ATOMIC_REQUESTS = True): "
                + ", ".join(
                    f"{row['label']} {row['median_ms'] / atomic['median_ms']:.2f}x"
                    for name, row in result["variants"].items()
                    if name.startswith("drf.mixin.")
                )
            )
        for note in result["notes"]:
            print(f"  note: {note}")


def print_floor(floor: dict[str, float], rows: dict[str, dict[str, Any]]) -> None:
    """Print the round trips' own cost (bench/floor.py) and the ratios it leaves room for."""
    added = floor["first"] - floor["bare"]
    print(
        f"  database floor (bench/floor.py: the same statements through psycopg alone, same run):"
        f" the bare view's INSERT {floor['bare']:.3f} ms; a first request's claim, BEGIN, INSERT"
        f" and completion with COMMIT {floor['first']:.3f} ms (+{added:.3f} ms); a replay's"
        f" claim {floor['replay']:.3f} ms"
    )
    bounds = [
        f"{rows[bare]['label']} {(rows[bare]['median_ms'] + added) / rows[bare]['median_ms']:.2f}x"
        for bare in ("drf.bare", "plain.bare")
        if bare in rows
    ]
    print(f"  so no first request can be faster than, against: {', '.join(bounds)}")
    reads = [
        f"{rows[bare]['label']} {floor['replay'] / rows[bare]['median_ms']:.2f}x"
        for bare in ("drf.bare", "plain.bare")
        if bare in rows
    ]
    print(f"  and a replay's claim alone is, against: {', '.join(reads)}")


def print_profile(profile: dict[str, dict[str, float]]) -> None:
    """Print each variant's profiled time per request, split by package."""
    groups = sorted({group for split in profile.values() for group in split})
    print("\n  profiled ms per request by package (cProfile own time, inflated by the profiler):")
    widths = [max(9, len(group) + 2) for group in groups]
    print(f"  {'variant':<36}" + "".join(f"{g:>{w}}" for g, w in zip(groups, widths, strict=True)))
    for label, split in profile.items():
        cells = (f"{split.get(g, 0.0):>{w}.3f}" for g, w in zip(groups, widths, strict=True))
        print(f"  {label:<36}{''.join(cells)}")


# The child: one database, every variant, interleaved.


def run_child(args: argparse.Namespace) -> int:
    import django

    django.setup()

    from django.core.handlers.wsgi import WSGIHandler
    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext, override_settings

    call_command("migrate", run_syncdb=True, verbosity=0)
    notes: list[str] = []
    variants = list(VARIANTS)
    if args.no_redis:
        variants = [v for v in variants if not v.needs_redis]
    elif (problem := _redis_problem()) is not None:
        notes.append(f"Redis variants skipped: {problem}")
        variants = [v for v in variants if not v.needs_redis]

    handlers: dict[str, Callable[..., Any]] = {"bare": WSGIHandler()}
    with override_settings(MIDDLEWARE=[MIDDLEWARE_PATH]):
        handlers["middleware"] = WSGIHandler()

    completed: dict[str, list[tuple[str, bytes]]] = {v.name: [] for v in variants}
    counter = iter(range(10**9))

    def request_for(variant: Variant) -> tuple[dict[str, Any], bool]:
        """Return a fresh environ for one request of ``variant`` and whether it is a replay."""
        if variant.key == "replay":
            key, body = completed[variant.replays][-1]
        else:
            key = f"{variant.name}-{next(counter)}"
            body = json.dumps({"amount": "12.50", "currency": "EUR", "reference": key}).encode()
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": variant.path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_ACCEPT": "application/json",
            # A caller the middleware can tell apart: keyed requests without a principal
            # are refused (docs/behaviour.md, "Security model"). DRF authenticates nothing
            # here, so the mixin scopes by this header's hash too.
            "HTTP_AUTHORIZATION": "Bearer bench-caller",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        if variant.key != "none":
            environ["HTTP_IDEMPOTENCY_KEY"] = key
        if variant.key == "first":
            completed[variant.name].append((key, body))
        return environ, variant.key == "replay"

    cpu: dict[str, list[int]] = {v.name: [] for v in variants}

    def call(variant: Variant) -> int:
        environ, is_replay = request_for(variant)
        handler = handlers[variant.handler]
        seen: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            seen.append((status, headers))

        cpu_started = time.process_time_ns()
        started = time.perf_counter_ns()
        response = handler(environ, start_response)
        b"".join(response)
        response.close()
        elapsed = time.perf_counter_ns() - started
        cpu[variant.name].append(time.process_time_ns() - cpu_started)
        status, headers = seen[0]
        replayed = ("Idempotent-Replayed", "true") in headers
        if not status.startswith("201") or replayed != is_replay:
            raise RuntimeError(f"{variant.name}: unexpected {status} (replayed={replayed})")
        return elapsed

    rng = random.Random(args.seed)
    # Warm-up: every code path, connection, prepared statement and cache line once and again.
    firsts = [v for v in variants if v.key != "replay"]
    for v in firsts:
        call(v)
    for _ in range(args.warmup):
        for v in _shuffled(variants, rng):
            call(v)

    queries: dict[str, int] = {}
    for v in variants:
        with CaptureQueriesContext(connection) as captured:
            call(v)
        queries[v.name] = len(captured)

    timings: dict[str, list[int]] = {v.name: [] for v in variants}
    for samples in cpu.values():
        samples.clear()  # count only the timed requests
    gc.collect()
    gc.freeze()
    for _ in range(args.requests):
        for v in _shuffled(variants, rng):
            timings[v.name].append(call(v))

    rows: dict[str, dict[str, Any]] = {}
    for v in variants:
        median, p99 = _median(timings[v.name]), _p99(timings[v.name])
        rows[v.name] = {
            "label": v.label,
            "median_ms": median / 1e6,
            "p99_ms": p99 / 1e6,
            "cpu_median_ms": _median(cpu[v.name]) / 1e6,
        }
    for v in variants:
        base = rows[v.baseline]
        row = rows[v.name]
        row["ratio_median"] = row["median_ms"] / base["median_ms"]
        row["ratio_p99"] = row["p99_ms"] / base["p99_ms"]
        row["queries"] = queries[v.name]
    gc.unfreeze()
    floor: dict[str, float] = {}
    if connection.vendor == "postgresql":
        from bench import floor as database_floor

        connection.ensure_connection()
        floor = {
            name: _median(values) / 1e6
            for name, values in database_floor.measure(
                connection.connection,
                args.requests,
                args.seed,
                flush_claims=os.environ.get("BENCH_UNFLUSHED_CLAIMS") != "1",
            ).items()
        }
    profile = (
        {v.label: _profile(call, v, args.profile, args.profile_functions) for v in variants}
        if args.profile
        else {}
    )
    if any(v.needs_redis for v in variants):
        _delete_redis_keys()
    result = {"server": _server_description(), "variants": rows, "notes": notes}
    if floor:
        result["floor_ms"] = floor
    if profile:
        result["profile"] = profile
    with open(args.child_output, "w") as file:
        json.dump(result, file)
    return 0


# What each profiled function's own time is charged to, by the first match in its file name.
PROFILE_GROUPS = (
    ("django_idempotency", "/django_idempotency/"),
    # SQLite runs in this process: its statements and commits are CPU and disk, not waiting.
    ("sqlite3", "sqlite3."),
    ("sqlite3", "SQLiteCursorWrapper.execute"),
    ("redis socket", "_socket.socket"),  # redis-py waiting for and reading Redis's answers
    # psycopg's own time includes waiting for PostgreSQL: its wait loop is charged to callers
    # differently from run to run, so waiting and client work are one group here; the
    # "cpu ms" column tells them apart.
    ("psycopg", "/psycopg/"),
    ("redis", "/redis/"),
    ("django.db", "/django/db/"),
    ("rest_framework", "/rest_framework/"),
    ("django", "/django/"),
)


def _profile(
    call: Callable[[Variant], int], variant: Variant, requests: int, functions: int = 0
) -> dict[str, float]:
    """Profile ``requests`` requests of ``variant``; return own time per request (ms) by group.

    With ``functions``, also print (to stderr) the costliest functions of this package.
    """
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        call(variant)
    profiler.disable()
    split: dict[str, float] = {}
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in stats.items():
        where = f"{filename}:{function}"
        group = next((name for name, part in PROFILE_GROUPS if part in where), "other")
        split[group] = split.get(group, 0.0) + own * 1e3 / requests
    if functions:
        ours = sorted(
            (
                (own * 1e6 / requests, f"{Path(filename).name}:{line} {function}")
                for (filename, line, function), (_cc, _nc, own, _cum, _callers) in stats.items()
                if "/django_idempotency/" in filename
            ),
            reverse=True,
        )[:functions]
        print(f"  {variant.label}: own µs per request", file=sys.stderr)
        for micros, where in ours:
            print(f"    {micros:7.1f}  {where}", file=sys.stderr)
    return split


def _shuffled(variants: Iterable[Variant], rng: random.Random) -> list[Variant]:
    order = list(variants)
    rng.shuffle(order)
    # A replay needs a completed key of its first-request variant; one exists from the
    # warm-up, and a replay that runs before this round's first request replays the last one.
    return order


def _median(values: list[int]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[middle])
    return (ordered[middle - 1] + ordered[middle]) / 2


def _p99(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[max(0, -(-len(ordered) * 99 // 100) - 1)])


def _redis_problem() -> str | None:
    from django_redis import get_redis_connection

    try:
        get_redis_connection("idempotency").ping()
    except Exception as exc:
        return f"Redis did not answer PING ({exc})"
    return None


def _delete_redis_keys() -> None:
    from django.conf import settings
    from django_redis import get_redis_connection

    client = get_redis_connection("idempotency")
    prefix = settings.CACHES["idempotency"]["KEY_PREFIX"]
    names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(names), 1000):
        client.delete(*names[start : start + 1000])


def _server_description() -> str:
    import django
    import rest_framework
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
            cursor.execute("SHOW synchronous_commit")
            server = f"PostgreSQL {version} (local TCP, synchronous_commit={cursor.fetchone()[0]})"
            if os.environ.get("BENCH_UNFLUSHED_CLAIMS") == "1":
                server += ", unflushed claims (flush_claims=False)"
    else:
        import sqlite3

        server = f"SQLite {sqlite3.sqlite_version} (file on disk, default journal)"
    return f"{server}; Django {django.get_version()}, DRF {rest_framework.VERSION}"


if __name__ == "__main__":
    sys.exit(main())
