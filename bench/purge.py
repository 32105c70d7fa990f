"""Benchmark purge_idempotency_keys on PostgreSQL: expired rows beside live ones.

Run from the repository root:

    .venv/bin/python bench/purge.py [--expired 1000000] [--live 100000] [--batch-size 2500]

It creates (and afterwards drops) its own database, ``idempotency_bench_purge``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from io import StringIO
from pathlib import Path

import django
import psycopg
from django.conf import settings

DATABASE = "idempotency_bench_purge"
HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = os.environ.get("PGPORT", "5432")
USER = os.environ.get("PGUSER", "postgres")


def create_database() -> None:
    """Create a fresh, empty benchmark database."""
    with psycopg.connect(
        host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')


def drop_database() -> None:
    """Drop the benchmark database."""
    with psycopg.connect(
        host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def configure_django() -> None:
    """Point Django at the benchmark database with only this app installed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    settings.configure(
        SECRET_KEY="bench",
        USE_TZ=True,
        INSTALLED_APPS=[
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django_idempotency",
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": DATABASE,
                "USER": USER,
                "HOST": HOST,
                "PORT": PORT,
            }
        },
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
    )
    django.setup()


def load_rows(expired: int, live: int) -> None:
    """Insert expired and live completed records, interleaved on the same pages.

    As in production, a record's expiry follows its insertion: expired rows span the day
    before the purge in insertion order, and every few rows a live one sits beside them.
    """
    from django.db import connection

    total = expired + live
    # Every (total // live)-th row is live; the rest expired up to a day ago.
    every = max(total // live, 1) if live else total + 1
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO django_idempotency_idempotencykey
                (scope, key, state, fingerprint, token, method, path, created_at,
                 completed_at, expires_at, response_status, response_headers, response_body)
            SELECT
                'user:' || (i %% 5000),
                'key-' || i,
                'completed',
                md5(i::text) || md5((i + 1)::text),
                md5((i + 2)::text),
                'POST',
                '/orders/',
                CASE WHEN i %% %(every)s = 0 AND n_live.live
                     THEN now() - interval '1 hour'
                     ELSE now() - interval '49 hours' + i * %(step)s * interval '1 second' END,
                now() - interval '1 hour',
                CASE WHEN i %% %(every)s = 0 AND n_live.live
                     THEN now() + interval '23 hours'
                     ELSE now() - interval '25 hours' + i * %(step)s * interval '1 second' END,
                201,
                '[["Content-Type", "application/json"]]'::jsonb,
                convert_to('{"id": ' || i || ', "status": "created", "amount": 1250}', 'UTF8')
            FROM generate_series(1, %(total)s) AS i,
                 LATERAL (SELECT i / %(every)s <= %(live)s AS live) AS n_live
            """,
            {"total": total, "every": every, "live": live, "step": 86400 / total},
        )
    connection.close()
    with psycopg.connect(host=HOST, port=PORT, user=USER, dbname=DATABASE, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE django_idempotency_idempotencykey")


def count(where: str) -> int:
    """Count the records matching a SQL condition."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM django_idempotency_idempotencykey WHERE {where}")
        return int(cursor.fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expired", type=int, default=1_000_000)
    parser.add_argument("--live", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2500)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()

    create_database()
    configure_django()
    from django.core.management import call_command

    call_command("migrate", "django_idempotency", verbosity=0)
    started = time.perf_counter()
    load_rows(args.expired, args.live)
    expired_before, live_before = count("expires_at <= now()"), count("expires_at > now()")
    print(
        f"loaded {expired_before:,} expired + {live_before:,} live rows "
        f"in {time.perf_counter() - started:.1f}s"
    )

    out = StringIO()
    started = time.perf_counter()
    call_command("purge_idempotency_keys", batch_size=args.batch_size, verbosity=2, stdout=out)
    elapsed = time.perf_counter() - started

    batches = [int(ms) for ms in re.findall(r"deleted \d+ in (\d+) ms", out.getvalue())]
    deleted = int(re.search(r"Deleted (\d+)", out.getvalue()).group(1))  # type: ignore[union-attr]
    live_after = count("expires_at > now()")
    print(f"batch size          {args.batch_size:,}")
    print(f"deleted             {deleted:,} rows in {len(batches)} batches, {elapsed:.2f}s")
    print(f"throughput          {deleted / elapsed:,.0f} rows/s")
    print(f"longest transaction {max(batches)} ms")
    print(f"median transaction  {statistics.median(batches):.0f} ms")
    print(f"p95 transaction     {sorted(batches)[int(0.95 * (len(batches) - 1))]} ms")
    print(f"live rows kept      {live_after:,} of {live_before:,}")
    if deleted != expired_before or live_after != live_before:
        sys.exit("FAILED: the purge did not delete exactly the expired rows")

    from django.db import connection

    connection.close()
    if not args.keep:
        drop_database()


if __name__ == "__main__":
    main()
