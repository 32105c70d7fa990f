"""factory-boy factories for the test suite."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone
from factory.declarations import LazyAttribute, LazyFunction, Sequence, Trait
from factory.django import DjangoModelFactory, Password
from factory.faker import Faker

from django_idempotency.models import IdempotencyKey
from django_idempotency.storage.base import new_token


class IdempotencyKeyFactory(DjangoModelFactory[IdempotencyKey]):
    """A completed, replayable record that is still live."""

    class Meta:
        model = IdempotencyKey

    scope = "user:1"
    key = Sequence(lambda n: f"key-{n:06d}")
    state = IdempotencyKey.State.COMPLETED
    fingerprint = Faker("sha256")
    token = LazyFunction(new_token)
    method = "POST"
    path = "/orders/"
    created_at = LazyFunction(timezone.now)
    completed_at = LazyAttribute(lambda o: o.created_at + timedelta(milliseconds=120))
    expires_at = LazyAttribute(lambda o: o.created_at + timedelta(hours=24))
    response_status = 201
    response_headers = LazyFunction(lambda: [["Content-Type", "application/json"]])
    response_body = b'{"id": 1, "status": "created"}'

    class Params:
        in_flight = Trait(
            state=IdempotencyKey.State.IN_FLIGHT,
            completed_at=None,
            expires_at=LazyAttribute(lambda o: o.created_at + timedelta(seconds=60)),
            response_status=None,
            response_headers=LazyFunction(list),
            response_body=b"",
        )
        expired = Trait(
            created_at=LazyFunction(lambda: timezone.now() - timedelta(days=2)),
        )


class UserFactory(DjangoModelFactory[User]):
    """An active user with a known password (``password``)."""

    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = Sequence(lambda n: f"user-{n:04d}")
    password = Password("password")
