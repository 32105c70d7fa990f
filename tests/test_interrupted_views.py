"""A view stopped by a ``BaseException`` leaves its key free and its writes rolled back.

Django's handler turns a view's ``Exception`` into a 500 response before the middleware sees
it, but not a ``BaseException``: gunicorn's timeout for a sync worker raises ``SystemExit``
inside the view, and Ctrl-C raises ``KeyboardInterrupt``. The middleware and the mixin then
abort the execution on the way out: the transaction the view shared with its key is rolled
back and the key released, so the client's retry runs (DESIGN §4).
"""

from __future__ import annotations

import uuid

import pytest
from django.test import Client

from django_idempotency.models import IdempotencyKey
from tests.factories import UserFactory
from tests.testapp.models import Execution

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls("tests.testapp.interrupt_urls"),
]


@pytest.mark.parametrize("url", ["/plain/", "/decorated/", "/mixin/"])
def test_interrupted_view__rolls_back_and_frees_its_key(url: str) -> None:
    client = Client()
    client.force_login(UserFactory.create())
    key = str(uuid.uuid4())

    with pytest.raises(SystemExit):
        client.post(url, {}, content_type="application/json", headers={"Idempotency-Key": key})

    assert not Execution.objects.exists()
    assert not IdempotencyKey.objects.filter(key=key).exists()
