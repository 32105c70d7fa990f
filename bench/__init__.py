"""Benchmarks: the cost of idempotency per request (``requests``) and per design (``designs``)."""
