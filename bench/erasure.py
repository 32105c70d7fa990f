"""Time an erasure with CacheStorage: one scope's keys found by a SCAN of every record.

Run from the repository root:

    .venv/bin/python -m bench.erasure [--records 100000] [--scopes 1000] [--db 8]

It fills Redis database ``--db`` on 127.0.0.1:6379 (flushed before and after: use one no one
else uses) with ``--records`` completed records spread over ``--scopes`` principals, then
counts and erases one principal's keys at two batch sizes. It fails unless each erasure
deleted exactly that principal's keys.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import django


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--scopes", type=int, default=1000)
    parser.add_argument("--db", type=int, default=8)
    options = parser.parse_args()
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ["IDEMPOTENCY_TEST_REDIS_URL"] = f"redis://127.0.0.1:6379/{options.db}"
    django.setup()
    from django_idempotency.storage.cache import CacheStorage

    storage = CacheStorage("idempotency")
    client = storage._client()
    client.flushdb()
    try:
        pipeline = client.pipeline(transaction=False)
        for number in range(options.records):
            scope, key = f"user:auth.user:{number % options.scopes}", f"key-{number}"
            name = storage.record_key(scope, key)
            fields = {"state": "completed", "scope": scope, "key": key, "token": "t"}
            pipeline.hset(name, mapping={**fields, "fingerprint": "f"})
            pipeline.pexpire(name, 600_000)
            if number % 5000 == 4999:
                pipeline.execute()
        pipeline.execute()
        expected = len(range(0, options.records, options.scopes))
        print(f"{client.dbsize()} records over {options.scopes} scopes, Redis db {options.db}")
        for principal, batch_size in ((1, 500), (2, 2500)):
            scope = f"user:auth.user:{principal}"
            started = time.perf_counter()
            counted = storage.count_scope(scope).value
            counting = time.perf_counter() - started
            started = time.perf_counter()
            erased = sum(storage.erase_scope(scope, batch_size=batch_size))
            erasing = time.perf_counter() - started
            print(
                f"batch size {batch_size}: counted {counted} in {counting:.2f} s, "
                f"erased {erased} in {erasing:.2f} s"
            )
            if counted != expected or erased != expected or storage.count_scope(scope).value:
                print(f"FAILED: expected {expected} keys counted and erased", file=sys.stderr)
                return 1
        return 0
    finally:
        client.flushdb()


if __name__ == "__main__":
    sys.exit(main())
