"""The test kit for adopters (``django_idempotency.testing``) and its pytest plugin.

The helpers are run against this suite's views on both storages, and shown to fail where
they must; the plugin's fixtures are run by pytester in a pytest of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from django_idempotency import testing
from tests.test_behaviour import storage  # noqa: F401  (the storage matrix)

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = "/drf/required/"


@pytest.fixture
def user() -> User:
    return User.objects.create_user("customer")


@pytest.fixture
def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_assert_replays__passes_for_a_protected_view(signed_in: Client) -> None:
    first, replay = testing.assert_replays(signed_in, REQUIRED, {"label": "pay"})

    assert first.status_code == 201
    assert replay.content == first.content


def test_assert_replays__fails_for_a_view_that_runs_twice(signed_in: Client, settings: Any) -> None:
    settings.IDEMPOTENCY_DISABLED = True

    with pytest.raises(AssertionError, match="not replayed"):
        testing.assert_replays(signed_in, REQUIRED, {"label": "pay"})


def test_assert_requires_key__passes_and_fails_as_it_should(
    signed_in: Client, settings: Any
) -> None:
    response = testing.assert_requires_key(signed_in, REQUIRED, {"label": "pay"})
    assert testing.error_code(response) == "idempotency_key_missing"

    settings.IDEMPOTENCY_DISABLED = True
    with pytest.raises(AssertionError, match="not 400"):
        testing.assert_requires_key(signed_in, REQUIRED, {"label": "pay"})


@pytest.mark.server_db
def test_fire_duplicates__reports_one_run_and_what_each_caller_got(user: User) -> None:
    def signed_in_client() -> Client:
        client = Client()
        client.force_login(user)
        return client

    report = testing.fire_duplicates(
        REQUIRED, {"label": "pay"}, n=6, client_factory=signed_in_client
    )

    assert report.runs == 1
    assert sum(report.statuses.values()) == 6
    assert set(report.statuses) <= {201, 409}
    assert report.statuses[201] == 1 + report.replayed


PLUGIN_TESTS = """
import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def signed_in():
    client = Client()
    client.force_login(User.objects.create_user("customer"))
    return client


def test_replays(idempotency, signed_in):
    idempotency.assert_replays(signed_in, "/drf/required/", {"label": "pay"})


def test_requires_a_key(idempotency, signed_in):
    idempotency.assert_requires_key(signed_in, "/drf/required/", {"label": "pay"})


def test_layer_off(idempotency_disabled, idempotency, signed_in):
    response = idempotency.post(signed_in, "/drf/required/", {"label": "pay"}, key=None)
    assert response.status_code == 201
"""


def test_plugin__offers_the_fixtures_in_a_project_of_its_own(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A project of its own: this suite's settings and views, the plugin found by its entry
    # point (nothing here loads it), in a pytest process of its own.
    pytester.makepyfile(test_project=PLUGIN_TESTS)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.settings")
    # A database of its own: the inner pytest destroys its test database when it ends,
    # and under dev.py the outer run's PostgreSQL test database has a name it would inherit.
    monkeypatch.setenv("IDEMPOTENCY_TEST_DATABASE", "sqlite")
    monkeypatch.setenv("IDEMPOTENCY_TEST_SQLITE_NAME", ":memory:")
    monkeypatch.delenv("IDEMPOTENCY_TEST_PG_NAME", raising=False)

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")

    result.assert_outcomes(passed=3)


def test_error_code__is_none_for_a_body_that_is_not_a_json_object() -> None:
    from django.http import HttpResponse

    assert testing.error_code(HttpResponse(b"<html>")) is None
    assert testing.error_code(HttpResponse(b"[1, 2]")) is None
