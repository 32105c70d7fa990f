"""Misconfiguration is never silent, and never breaks what the layer does not cover.

- A misspelled ``idempotency_*`` attribute or ``get_idempotency_*`` hook on a mixin view, or
  a misspelled ``@idempotent`` keyword, is refused where the view is defined, with the closest
  valid name.
- A misspelled ``IDEMPOTENCY_*`` setting is warned about by ``manage.py check`` (W003).
- A bad setting value under a server that runs no system checks (gunicorn): requests the layer
  covers raise ``ImproperlyConfigured`` naming the setting (Django logs it and answers 500; the
  view never runs, nothing is stored); every other request works as if the layer were absent.
- A mixin hook that returns a bad value at request time fails closed the same way: the
  unsafe requests it might cover are refused, safe ones are served.

See docs/settings.md, "Bad settings", and docs/checks.md.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency import options
from django_idempotency.conf import idempotency_settings
from django_idempotency.decorators import idempotent
from django_idempotency.mixins import IdempotencyMixin
from django_idempotency.models import IdempotencyKey
from django_idempotency.policy import Policy
from django_idempotency.testing import close_thread_connections
from tests.factories import UserFactory
from tests.live_server import LiveServer, live_gunicorn
from tests.testapp.models import Execution, Order
from tests.testapp.views import behave

pytestmark = pytest.mark.django_db(transaction=True)


#: A view of each entry point, each covering a keyed POST.
ENTRY_POINTS = {
    "mixin": "/drf/required/",
    "middleware": "/plain/behave/",
    "decorator": "/decorated/behave/",
}

#: A bad value of each kind, and what the error must say about it.
BAD_SETTINGS = {
    "IDEMPOTENCY_TTL": ("3600", "IDEMPOTENCY_TTL is '3600', which is not a positive timedelta"),
    "IDEMPOTENCY_LEASE": (-1, "IDEMPOTENCY_LEASE is -1, which is not a positive timedelta"),
    "IDEMPOTENCY_ANONYMOUS": ("everyone", "IDEMPOTENCY_ANONYMOUS is 'everyone'"),
    "IDEMPOTENCY_STORAGE": ("nowhere.Storage", "IDEMPOTENCY_STORAGE is 'nowhere.Storage'"),
    "IDEMPOTENCY_SCOPE": ("nowhere.scope", "IDEMPOTENCY_SCOPE is 'nowhere.scope'"),
    "IDEMPOTENCY_FINGERPRINT": (
        "django_idempotency.keys.NoSuchFunction",
        "IDEMPOTENCY_FINGERPRINT is 'django_idempotency.keys.NoSuchFunction'",
    ),
}


@pytest.fixture
def client() -> Client:
    client = Client()  # raises the request's exception, as Django's handler would log it
    client.force_login(UserFactory.create())
    return client


def keyed_post(client: Client, url: str, key: str = "k-1") -> Any:
    return client.post(
        url, {"label": "charge"}, content_type="application/json", headers={"Idempotency-Key": key}
    )


def nothing_happened() -> bool:
    return not Execution.objects.exists() and not IdempotencyKey.objects.exists()


# One table: each option's default, validity and conversion is written once.


def test_the_table__an_unset_setting_reads_as_its_default_converted() -> None:
    for name, option in options.OPTIONS.items():
        assert idempotency_settings.raw(name) == option.default
        assert idempotency_settings.value(name) == option.convert(option.default)
    assert idempotency_settings.ANONYMOUS == "session"
    assert timedelta(seconds=60) == idempotency_settings.LEASE


def test_settings__a_setting_read_once_follows_a_change(settings: Any) -> None:
    assert idempotency_settings.HEADER == "Idempotency-Key"

    settings.IDEMPOTENCY_HEADER = "X-Request-Key"
    assert idempotency_settings.HEADER == "X-Request-Key"

    settings.IDEMPOTENCY_HEADER = ""
    for _ in range(2):  # a bad value is refused on every read, never kept
        with pytest.raises(ImproperlyConfigured, match="IDEMPOTENCY_HEADER is ''"):
            idempotency_settings.HEADER  # noqa: B018


def test_the_table__gives_the_checks_and_the_views_their_validators() -> None:
    for name, option in options.OPTIONS.items():
        assert options.SETTING_VALIDATORS[f"IDEMPOTENCY_{name.upper()}"] == option.setting
        assert options.OPTION_VALIDATORS.get(name) == option.view
    # Settings only: a view cannot choose its database, cache or header, to switch the layer
    # off, the metrics and tracing, how stored bodies are encrypted, nor what the admin shows.
    assert set(options.OPTIONS) - set(options.OPTION_VALIDATORS) == {
        "database",
        "cache_alias",
        "header",
        "disabled",
        "metrics",
        "tracing",
        "encryptor",
        "encryption_keys",
        "admin_show_bodies",
    }


def test_the_table__names_every_field_a_policy_takes_from_the_settings() -> None:
    policy_fields = {field.name for field in dataclasses.fields(Policy)}

    assert set(options.OPTION_VALIDATORS) | {"header", "encryptor"} == policy_fields


def test_the_table__every_per_view_option_is_a_mixin_attribute_and_a_decorator_keyword() -> None:
    for name in options.OPTION_VALIDATORS:
        assert hasattr(IdempotencyMixin, f"idempotency_{name}")
        idempotent(**{name: options.OPTIONS[name].default or None})(lambda request: None)


@pytest.mark.parametrize(
    ("overrides", "field", "expected"),
    [
        ({"ttl": 30}, "ttl", timedelta(seconds=30)),
        ({"methods": ["put"]}, "methods", frozenset({"PUT"})),
        ({"mismatch_status": 409}, "mismatch_status", 409),
        # A view's replay headers add to the setting's and the defaults.
        ({"replay_headers": ["X-Cost"]}, "replay_headers", {"x-cost", "x-setting", "etag"}),
    ],
)
@pytest.mark.usefixtures("db")
def test_the_table__converts_a_per_view_value_as_it_converts_the_setting(
    settings: Any, overrides: dict[str, Any], field: str, expected: Any
) -> None:
    settings.IDEMPOTENCY_REPLAY_HEADERS = ["X-Setting"]

    value = getattr(Policy.build(overrides), field)

    if field == "replay_headers":
        assert expected <= value
    else:
        assert value == expected


# Misspelled per-view options: refused where the view is defined.


def test_mixin__a_misspelled_attribute_is_refused_with_the_name_it_meant() -> None:
    from rest_framework.views import APIView

    with pytest.raises(ImproperlyConfigured) as refused:

        class ChargeView(IdempotencyMixin, APIView):
            idempotency_requried = True

    message = str(refused.value)
    assert "ChargeView" in message
    assert "'idempotency_requried'" in message
    assert "did you mean 'idempotency_required'?" in message


def test_mixin__a_misspelled_hook_is_refused_with_the_name_it_meant() -> None:
    from rest_framework.views import APIView

    with pytest.raises(ImproperlyConfigured) as refused:

        class ChargeView(IdempotencyMixin, APIView):
            def get_idempotency_requried(self) -> bool:
                return True

    message = str(refused.value)
    assert "ChargeView" in message
    assert "'get_idempotency_requried'" in message
    assert "did you mean 'get_idempotency_required'?" in message


def test_mixin__a_known_attribute_of_the_wrong_type_is_refused() -> None:
    from rest_framework.views import APIView

    with pytest.raises(ImproperlyConfigured) as refused:

        class ChargeView(IdempotencyMixin, APIView):
            idempotency_ttl = "3600"  # type: ignore[assignment]  # the mistake under test

    assert "ChargeView" in str(refused.value)
    assert "idempotency_ttl='3600' is not a positive timedelta" in str(refused.value)


def test_mixin__every_documented_option_and_hook_is_accepted() -> None:
    from rest_framework.views import APIView

    class ChargeView(IdempotencyMixin, APIView):
        idempotency_required = True
        idempotency_ttl = timedelta(hours=1)
        idempotency_anonymous = "refuse"

        def get_idempotency_lease(self) -> int:
            return 30

        def get_idempotency_options(self) -> dict[str, Any]:
            return super().get_idempotency_options()

    assert ChargeView.idempotency_class_options()["required"] is True


def test_decorator__a_misspelled_keyword_is_refused_with_the_name_it_meant() -> None:
    def charge(request: Any) -> Any: ...

    with pytest.raises(ImproperlyConfigured) as refused:
        idempotent(requried=True)(charge)

    assert "charge" in str(refused.value)
    assert "'requried' is not an idempotency option (did you mean 'required'?)" in str(
        refused.value
    )


def test_decorator__an_unknown_keyword_far_from_any_name_points_to_the_docs() -> None:
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse()

    with pytest.raises(ImproperlyConfigured, match=r"see docs/settings\.md"):
        idempotent(zzzzzz=1)(view)


def _api_view_function() -> Any:
    from rest_framework.decorators import api_view

    @api_view(["POST"])
    def charge(request: Any) -> Any: ...

    return charge


def _api_view_class() -> Any:
    from rest_framework.views import APIView

    class ChargeView(APIView):
        def post(self, request: Any) -> Any: ...

    return ChargeView.as_view()


@pytest.mark.parametrize(
    "drf_view", [_api_view_function, _api_view_class], ids=["api_view", "APIView.as_view"]
)
def test_decorator__on_a_drf_view_is_refused_since_it_would_protect_nothing(
    drf_view: Callable[[], Any],
) -> None:
    # The middleware leaves DRF views alone (it runs before DRF authenticates): the mark
    # would be ignored, and a payments view left unprotected without a word.
    with pytest.raises(ImproperlyConfigured) as refused:
        idempotent(required=True)(drf_view())

    assert "a DRF view cannot be protected by @idempotent" in str(refused.value)
    assert "IdempotencyMixin" in str(refused.value)


# Misspelled settings: W003.


def w003(settings: Any) -> list[str]:
    """Return the W003 messages ``manage.py check`` shows (it leaves out silenced ones)."""
    return [
        m.msg for m in run_checks() if m.id == "django_idempotency.W003" and not m.is_silenced()
    ]


def test_check__a_misspelled_setting_is_named_with_the_setting_it_meant(settings: Any) -> None:
    settings.IDEMPOTENCY_REQUIRD = True

    assert w003(settings) == [
        "IDEMPOTENCY_REQUIRD is not a django-idempotency setting, so it has no effect "
        "(did you mean 'IDEMPOTENCY_REQUIRED'?)."
    ]


def test_check__settings_of_other_idempotency_packages_are_left_alone(settings: Any) -> None:
    from django_idempotency.checks import OTHER_PACKAGES_SETTINGS

    settings.IDEMPOTENCY_KEY = "HTTP_IDEMPOTENCY_KEY"
    settings.IDEMPOTENCY_KEY_ENCODER = "somewhere.Encoder"
    settings.IDEMPOTENCY_KEY_STORAGE_CACHE_NAME = "default"

    assert OTHER_PACKAGES_SETTINGS == ("IDEMPOTENCY_KEY", "IDEMPOTENCY_KEY_*")
    assert w003(settings) == []


def test_check__w003_is_silenced_like_any_check(settings: Any) -> None:
    settings.IDEMPOTENCY_REQUIRD = True
    settings.SILENCED_SYSTEM_CHECKS = ["django_idempotency.W003"]

    assert w003(settings) == []


# A bad setting at request time (no system checks ran).


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
@pytest.mark.parametrize("setting", list(BAD_SETTINGS))
def test_bad_setting__a_covered_request_is_refused_naming_the_setting(
    client: Client, settings: Any, entry_point: str, setting: str
) -> None:
    value, expected = BAD_SETTINGS[setting]
    setattr(settings, setting, value)

    with pytest.raises(ImproperlyConfigured) as refused:
        keyed_post(client, ENTRY_POINTS[entry_point])

    assert expected in str(refused.value)
    assert nothing_happened()


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
@pytest.mark.parametrize("setting", list(BAD_SETTINGS))
def test_bad_setting__a_safe_request_works_as_usual(
    client: Client, settings: Any, entry_point: str, setting: str
) -> None:
    setattr(settings, setting, BAD_SETTINGS[setting][0])

    response = client.get(ENTRY_POINTS[entry_point], headers={"Idempotency-Key": "k-1"})

    assert response.status_code in (200, 201)
    assert not IdempotencyKey.objects.exists()


def test_bad_setting__a_storage_that_is_no_storage_class_refuses_covered_requests(
    client: Client, settings: Any
) -> None:
    settings.IDEMPOTENCY_STORAGE = "django.http.HttpResponse"

    with pytest.raises(ImproperlyConfigured, match="is not a django_idempotency Storage subclass"):
        keyed_post(client, ENTRY_POINTS["decorator"])
    assert nothing_happened()


def test_bad_setting__an_unkeyed_post_where_keys_are_optional_works_as_usual(
    client: Client, settings: Any
) -> None:
    settings.IDEMPOTENCY_TTL = "3600"

    response = client.post("/plain/behave/", {}, content_type="application/json")

    assert response.status_code == 201


def test_bad_setting__the_admin_login_page_works(settings: Any) -> None:
    settings.IDEMPOTENCY_TTL = "3600"
    UserFactory.create(username="staff", password="secret", is_staff=True, is_superuser=True)
    client = Client()

    page = client.get("/admin/login/")
    login = client.post("/admin/login/", {"username": "staff", "password": "secret"})

    assert page.status_code == 200
    assert login.status_code == 302
    assert client.get("/admin/django_idempotency/idempotencykey/").status_code == 200


def test_bad_setting__is_logged_once_when_it_first_leaves_a_request_alone(
    client: Client, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.IDEMPOTENCY_TTL = "3600"

    with caplog.at_level(logging.ERROR, logger="django_idempotency"):
        client.get("/plain/behave/")
        client.get("/plain/behave/")

    logged = [r.getMessage() for r in caplog.records if r.name.startswith("django_idempotency")]
    assert len(logged) == 1
    assert "IDEMPOTENCY_TTL is '3600'" in logged[0]


def test_bad_setting__every_bad_setting_is_named_at_once(client: Client, settings: Any) -> None:
    settings.IDEMPOTENCY_TTL = "3600"
    settings.IDEMPOTENCY_MISMATCH_STATUS = 418

    with pytest.raises(ImproperlyConfigured) as refused:
        keyed_post(client, "/plain/behave/")

    assert "IDEMPOTENCY_TTL is '3600'" in str(refused.value)
    assert "IDEMPOTENCY_MISMATCH_STATUS is 418" in str(refused.value)


def test_bad_setting__once_fixed_the_layer_protects_again(client: Client, settings: Any) -> None:
    settings.IDEMPOTENCY_TTL = "3600"
    with pytest.raises(ImproperlyConfigured):
        keyed_post(client, "/plain/behave/")

    settings.IDEMPOTENCY_TTL = 3600
    first, retry = keyed_post(client, "/plain/behave/"), keyed_post(client, "/plain/behave/")

    assert first.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"


@pytest.mark.asyncio
async def test_bad_setting__async_middleware_refuses_covered_and_serves_safe(
    async_client: Any, settings: Any
) -> None:
    from asgiref.sync import sync_to_async

    settings.IDEMPOTENCY_TTL = "3600"
    try:
        page = await async_client.get("/async/behave/")
        with pytest.raises(ImproperlyConfigured, match="IDEMPOTENCY_TTL is '3600'"):
            await async_client.post(
                "/async/behave/",
                {"label": "charge"},
                content_type="application/json",
                headers={"Idempotency-Key": "k-1"},
            )
        assert page.status_code == 201
        assert not await sync_to_async(Execution.objects.filter(label="charge").exists)()
    finally:
        await sync_to_async(close_thread_connections)()


# When the bad setting is one that decides coverage, every doubt counts as covered.


def test_bad_methods__every_unsafe_method_counts_as_covered(client: Client, settings: Any) -> None:
    settings.IDEMPOTENCY_METHODS = "POST"  # a string, not a list

    with pytest.raises(ImproperlyConfigured, match="IDEMPOTENCY_METHODS is 'POST'"):
        client.put(
            "/plain/behave/", {}, content_type="application/json", headers={"Idempotency-Key": "k"}
        )
    unkeyed = client.put("/plain/behave/", {}, content_type="application/json")
    page = client.get("/plain/behave/", headers={"Idempotency-Key": "k"})

    assert unkeyed.status_code == 201  # keys stay optional: IDEMPOTENCY_REQUIRED is valid
    assert page.status_code == 201


def test_bad_required__every_unsafe_request_counts_as_keyed(client: Client, settings: Any) -> None:
    settings.IDEMPOTENCY_REQUIRED = "yes"

    with pytest.raises(ImproperlyConfigured, match="IDEMPOTENCY_REQUIRED is 'yes'"):
        client.post("/plain/behave/", {}, content_type="application/json")
    assert client.get("/plain/behave/").status_code == 201


def test_bad_header__every_unsafe_request_counts_as_keyed(client: Client, settings: Any) -> None:
    settings.IDEMPOTENCY_HEADER = ""

    with pytest.raises(ImproperlyConfigured, match="IDEMPOTENCY_HEADER is ''"):
        client.post("/plain/behave/", {}, content_type="application/json")
    with pytest.raises(ImproperlyConfigured, match="IDEMPOTENCY_HEADER is ''"):
        client.post("/drf/behave/", {}, content_type="application/json")
    assert client.get("/drf/behave/").status_code == 200


def test_view_methods__decide_coverage_when_only_another_setting_is_bad(
    client: Client, settings: Any
) -> None:
    # /decorated/behave/ covers POST, PATCH and DELETE, whatever IDEMPOTENCY_METHODS says.
    settings.IDEMPOTENCY_METHODS = ["PUT"]
    settings.IDEMPOTENCY_TTL = "3600"

    with pytest.raises(ImproperlyConfigured):
        client.delete("/decorated/behave/", headers={"Idempotency-Key": "k"})
    assert client.put("/decorated/behave/", headers={"Idempotency-Key": "k"}).status_code == 201


# A hook that returns a bad value at request time: the layer fails closed.


class BadMethodsHookView(IdempotencyMixin, APIView):
    def get_idempotency_methods(self) -> Any:
        return "POST"  # a string, not a list

    def get(self, request: Request) -> HttpResponse:
        return HttpResponse("page")

    def post(self, request: Request) -> HttpResponse:
        return behave({}, "bad-methods")


class BadRequiredHookView(IdempotencyMixin, APIView):
    def get_idempotency_required(self) -> Any:
        return "yes"

    def get(self, request: Request) -> HttpResponse:
        return HttpResponse("page")

    def post(self, request: Request) -> HttpResponse:
        return behave({}, "bad-required")


urlpatterns = [
    path("bad-methods/", BadMethodsHookView.as_view()),
    path("bad-required/", BadRequiredHookView.as_view()),
]


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    ("url", "method", "headers", "message"),
    [
        # Which methods were meant is unknown: a keyed PUT counts as covered.
        ("/bad-methods/", "put", {"Idempotency-Key": "k"}, "methods='POST'"),
        # Whether keys are required is unknown: an unkeyed POST counts as keyed.
        ("/bad-required/", "post", {}, "required='yes'"),
    ],
)
def test_hook_returning_a_bad_value__refuses_unsafe_requests_and_serves_safe_ones(
    url: str, method: str, headers: dict[str, str], message: str
) -> None:
    client = Client()

    with pytest.raises(ImproperlyConfigured, match=message):
        getattr(client, method)(url, "{}", "application/json", headers=headers)
    assert client.get(url).content == b"page"
    assert not Execution.objects.exists()


# Under a real server that runs no system checks.


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return int(error.code)


@pytest.fixture(scope="module")
def misconfigured_server(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Two gunicorn sync workers with ``IDEMPOTENCY_TTL = "3600"`` on the test database."""
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with live_gunicorn(
        log=log,
        storage="database",
        lease=60,
        workers=2,
        settings_module="tests.live_settings_misconfigured",
    ) as server:
        yield server


@pytest.mark.postgres
def test_gunicorn__a_bad_setting_refuses_covered_requests_and_serves_the_rest(
    misconfigured_server: LiveServer,
) -> None:
    key = str(uuid.uuid4())
    request = urllib.request.Request(
        misconfigured_server.url + "/live/orders/",
        data=json.dumps({"item": key}).encode(),
        headers={"Content-Type": "application/json", "Idempotency-Key": key},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    refused.value.close()

    assert _get(misconfigured_server.url + "/drf/behave/") == 200
    assert _get(misconfigured_server.url + "/admin/login/") == 200
    assert refused.value.code == 500
    log = misconfigured_server.log_tail(100_000)
    assert "ImproperlyConfigured: IDEMPOTENCY_TTL is '3600'" in log
    assert not Order.objects.filter(item=key).exists()
    assert not Execution.objects.filter(label=key).exists()
    assert not IdempotencyKey.objects.filter(key=key).exists()
