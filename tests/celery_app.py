"""The Celery app of tests/test_celery.py: RabbitMQ as the broker, acks late, results over RPC.

The worker the tests start runs it under ``tests.live_settings`` on the PostgreSQL test
database (celery's Django fixup sets Django up in the worker); the test process sends tasks
and reads their results through the same app.
"""

from __future__ import annotations

import os

from celery import Celery

#: RabbitMQ on this machine; IDEMPOTENCY_TEST_BROKER_URL points elsewhere.
BROKER_URL = os.environ.get("IDEMPOTENCY_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")

app = Celery("tests", include=["tests.celery_tasks"])
app.conf.update(
    broker_url=BROKER_URL,
    broker_connection_retry_on_startup=True,
    result_backend="rpc://",
    # The recipe of docs/functions.md: a message is acknowledged once its task returned, and
    # put back on the queue when the process running it dies.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
