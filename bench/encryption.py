"""Time FernetEncryptor's seal and unseal of a stored body, by body size.

Run from the repository root:

    .venv/bin/python -m bench.encryption [--number 5000]

What encryption adds to a first request (seal) and to a replay (unseal), beside the store's
round trips of docs/benchmarks.md; and how much larger a sealed body is.
"""

from __future__ import annotations

import argparse
import timeit
from functools import partial

from cryptography.fernet import Fernet

from django_idempotency.encryption import FernetEncryptor, seal, unseal

SIZES = (200, 2_000, 20_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000)
    number = parser.parse_args().number
    encryptor = FernetEncryptor([Fernet.generate_key()])
    for size in SIZES:
        body = b"x" * size
        sealed = seal(body, encryptor)
        assert unseal(sealed, encryptor) == body
        sealing = timeit.timeit(partial(seal, body, encryptor), number=number) / number
        opening = timeit.timeit(partial(unseal, sealed, encryptor), number=number) / number
        print(
            f"{size:>6} B body: seal {sealing * 1e6:6.1f} us, unseal {opening * 1e6:6.1f} us, "
            f"stored {len(sealed)} B"
        )


if __name__ == "__main__":
    main()
