"""The wire behaviour of DESIGN §3 and §4, as one matrix of storage x entry point x sync/async.

Every test that takes ``url`` runs through each entry point: the DRF mixin (sync only, as DRF
is), the middleware in front of a plain view and ``@idempotent``, each of the last two on
Django's sync and async paths. Every test runs on each storage: ``DatabaseStorage`` on the
database of the pass (SQLite, then PostgreSQL; see dev.py) and ``CacheStorage`` on real Redis.
Where the storages answer differently, the test says so and why (docs/storage-cache.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import SESSION_KEY, get_user_model
from django.db import connections
from django.test import AsyncClient, Client, RequestFactory, override_settings

from django_idempotency.fingerprints import default_fingerprint
from django_idempotency.models import IdempotencyKey
from django_idempotency.scopes import default_scope
from django_idempotency.signals import idempotency_failed_open
from django_idempotency.storage import Origin
from django_idempotency.storage.registry import configured_storage
from tests.factories import UserFactory
from tests.leases import expire_now
from tests.problems import is_problem
from tests.records import stored_origin, stored_records, stored_token
from tests.redis_servers import caches_with, free_port, redis_cache_config
from tests.request_threads import request_thread
from tests.store_faults import failing_queries, on_the_idempotency_table, on_the_table
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)

COMPLETED = IdempotencyKey.State.COMPLETED
IN_FLIGHT = IdempotencyKey.State.IN_FLIGHT
NOT_REPLAYABLE = IdempotencyKey.State.NOT_REPLAYABLE


@dataclass(frozen=True)
class EntryPoint:
    """One way a request reaches the engine: the entry point, on its sync or async path."""

    name: str
    url: str
    is_async: bool = False

    def __str__(self) -> str:
        return f"{self.name}-async" if self.is_async else self.name


ENTRY_POINTS = [
    EntryPoint("mixin", "/drf/required/"),
    EntryPoint("middleware", "/plain/behave/"),
    EntryPoint("middleware", "/async/behave/", is_async=True),
    EntryPoint("decorator", "/decorated/behave/"),
    EntryPoint("decorator", "/async/decorated/behave/", is_async=True),
]
MIXIN = ENTRY_POINTS[0]
DECORATOR = ENTRY_POINTS[3]

#: A test client of either kind; ``send`` posts through both.
Caller = Client | AsyncClient

#: Run a test on DatabaseStorage only; each use says why the cache has no counterpart here.
DATABASE_STORAGE_ONLY = pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
#: Run a test on each storage and on CacheStorage with tombstones too (``storage.cache``).
WITH_TOMBSTONES = pytest.mark.parametrize(
    "storage_backend",
    [
        "database",
        pytest.param("cache", marks=pytest.mark.redis),
        pytest.param("cache-tombstones", marks=pytest.mark.redis),
    ],
    indirect=True,
)
#: Run a test through the sync entry points only; each use says why.
SYNC_ONLY = pytest.mark.parametrize(
    "entry_point", [e for e in ENTRY_POINTS if not e.is_async], indirect=True, ids=str
)


def through(name: str) -> pytest.MarkDecorator:
    """Run a test through one entry point only, on each of its paths: the view it needs."""
    return pytest.mark.parametrize(
        "entry_point", [e for e in ENTRY_POINTS if e.name == name], indirect=True, ids=str
    )


@pytest.fixture(autouse=True)
def storage(storage_backend: str) -> str:
    """The storage of the test: "database" or "cache" (the ``storage_backend`` fixture)."""
    return storage_backend


@pytest.fixture(params=ENTRY_POINTS, ids=str)
def entry_point(request: pytest.FixtureRequest, settings: Any) -> EntryPoint:
    # The middleware's plain views take their policy from the settings.
    settings.IDEMPOTENCY_REQUIRED = True
    entry_point: EntryPoint = request.param
    return entry_point


@pytest.fixture
def url(entry_point: EntryPoint) -> str:
    return entry_point.url


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Client | AsyncClient:
    """A signed-in caller: what follows holds for every kind of principal (see test_scopes).

    An ``AsyncClient`` when the test runs through an entry point's async path, else a ``Client``.
    """
    runs_async = "entry_point" in request.fixturenames and (
        request.getfixturevalue("entry_point").is_async
    )
    client = AsyncClient if runs_async else Client
    caller = client(raise_request_exception=False)
    caller.force_login(UserFactory.create())
    return caller


def send(
    client: Caller,
    url: str,
    payload: dict[str, Any] | None = None,
    *,
    key: str | None = None,
    method: str = "post",
    query: str = "",
    content_type: str = "application/json",
    body: str | None = None,
) -> Any:
    """Send one request through ``client``; an ``AsyncClient``'s goes through ASGI's path.

    A safe method sends no body. ``key`` is the raw ``Idempotency-Key`` header, if any;
    ``body``, when given, is sent as it is instead of ``payload`` as JSON.
    """
    headers = {} if key is None else {"Idempotency-Key": key}
    if method in ("get", "head", "options"):
        arguments: dict[str, Any] = {"headers": headers}
    else:
        data = json.dumps(payload or {}) if body is None else body
        arguments = {"data": data, "content_type": content_type, "headers": headers}
    if isinstance(client, Client):
        return getattr(client, method)(url + query, **arguments)

    async def send_async() -> Any:
        async with request_thread():
            return await getattr(client, method)(url + query, **arguments)

    return asyncio.run(send_async())


def executions(label: str | None = None) -> int:
    queryset = Execution.objects.all()
    return queryset.filter(label=label).count() if label else queryset.count()


def stored_keys() -> list[str]:
    return [key for _scope, key, _state in stored_records()]


def stored_states() -> list[str]:
    return [state for _scope, _key, state in stored_records()]


def scope_of(client: Caller) -> str:
    """Return the scope of the user signed in on ``client``."""
    request = RequestFactory().post("/")
    request.user = get_user_model().objects.get(pk=client.session[SESSION_KEY])
    return default_scope(request)


def claim_in_flight(
    client: Caller, url: str, payload: dict[str, Any], key: str, lease: timedelta
) -> None:
    """Claim the key as a concurrent original request of the client's would, without finishing."""
    request = RequestFactory().post(url, json.dumps(payload), content_type="application/json")
    result = configured_storage().claim(
        scope_of(client), key, default_fingerprint(request), lease=lease, origin=Origin("POST", url)
    )
    assert not hasattr(result, "state"), "the key was already taken"


# What claimed a key


@pytest.mark.parametrize("method", ["post", "patch"])
def test_claim__records_the_requests_method_and_path(client: Caller, url: str, method: str) -> None:
    # The admin shows them: an operator sees which request claimed the key.
    response = send(client, url, {"label": "pay"}, key="k", method=method, query="?page=2")

    assert response.status_code == 201
    assert stored_origin("k") == Origin(method.upper(), url)


# Safe methods


@pytest.mark.parametrize("method", ["get", "head", "options"])
def test_safe_method__ignores_key_and_never_requires_it(
    client: Caller, url: str, method: str
) -> None:
    first = send(client, url, key="k", method=method)
    second = send(client, url, key="k", method=method)
    without_key = send(client, url, method=method)

    assert first.status_code < 400
    assert without_key.status_code < 400
    assert "Idempotent-Replayed" not in second
    assert stored_records() == []


@through("middleware")  # its plain views take their methods from the settings
def test_safe_method__is_never_covered_even_when_listed(
    client: Caller, url: str, settings: Any
) -> None:
    settings.IDEMPOTENCY_METHODS = ["GET", "POST"]

    send(client, url, key="k", method="get")

    assert stored_records() == []


# Missing and malformed keys


def test_missing_key__is_400_when_required(client: Caller, url: str) -> None:
    response = send(client, url, {"label": "x"})

    assert response.status_code == 400
    assert is_problem(response, "idempotency_key_missing")
    assert executions() == 0


@through("middleware")  # the other views require a key in their own options
def test_missing_key__runs_normally_when_optional(client: Caller, url: str, settings: Any) -> None:
    settings.IDEMPOTENCY_REQUIRED = False

    assert send(client, url, {"label": "x"}).status_code == 201
    assert send(client, url, {"label": "x"}).status_code == 201
    assert executions("x") == 2


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "k" * 256,
        "clé",
        "two words",
        '"unterminated',
        '"bad\\escape"',
        '"trailing"junk',
        'stray"quote',
        "back\\slash",
        '""',
        "tab\tinside",
        # Two header lines, joined by the server (issue 7): never taken as one key.
        "a,a",
        "a,b",
        "a, b",
        '"a", "b"',
        'a,"b"',
    ],
)
# A malformed key is refused before any storage is asked, so the storage axis would only
# repeat these 17 cases; stored_records() still shows the database kept nothing.
@DATABASE_STORAGE_ONLY
def test_malformed_key__is_400_and_stores_nothing(client: Caller, url: str, raw: str) -> None:
    response = send(client, url, key=raw)

    assert response.status_code == 400
    assert is_problem(response, "idempotency_key_invalid")
    assert executions() == 0
    assert stored_records() == []


# As any malformed key, on one entry point: a control character inside the quotes of an sf-string.
@DATABASE_STORAGE_ONLY
@pytest.mark.parametrize("entry_point", [DECORATOR], indirect=True, ids=str)
def test_malformed_key__control_character_inside_quotes_is_400(client: Caller, url: str) -> None:
    response = send(client, url, key='"ab\x01c"')

    assert response.status_code == 400
    assert is_problem(response, "idempotency_key_invalid")
    assert executions() == 0


@pytest.mark.parametrize(
    ("raw", "stored"),
    [("abc", "abc"), ('"abc"', "abc"), ('"a\\"b"', 'a"b'), ('"a,b"', "a,b")],
)
def test_key__bare_or_sf_string_names_the_same_record(
    client: Caller, url: str, raw: str, stored: str
) -> None:
    response = send(client, url, key=raw)

    assert response.status_code == 201
    assert stored_keys() == [stored]


def test_key__255_visible_ascii_characters_are_accepted(client: Caller, url: str) -> None:
    key = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"\\,') * 3

    assert send(client, url, {}, key=key[:255]).status_code == 201


# Bodies over Django's upload limit


# Refused before any storage is asked, as a malformed key is: the storage axis would only repeat.
@DATABASE_STORAGE_ONLY
@pytest.mark.parametrize("entry_point", [DECORATOR, MIXIN], indirect=True, ids=str)
def test_body_over_the_upload_limit__is_413_and_runs_nothing(
    client: Caller, url: str, settings: Any
) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100

    response = send(client, url, {"padding": "x" * 1000}, key="k")

    assert response.status_code == 413
    assert is_problem(response, "idempotency_request_too_large")
    assert executions() == 0
    assert stored_records() == []


# First request and replay


def test_first_request__runs_the_view_once(client: Caller, url: str) -> None:
    response = send(client, url, {"label": "pay"}, key="k1")

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert executions("pay") == 1
    assert stored_states() == [COMPLETED]


def test_retry__replays_status_body_and_allow_listed_headers(client: Caller, url: str) -> None:
    payload = {"label": "pay", "location": "/payments/7/", "set_cookie": True}
    first = send(client, url, payload, key="k1")
    retry = send(client, url, payload, key="k1")

    assert retry.status_code == first.status_code == 201
    assert retry.content == first.content
    assert retry["Idempotent-Replayed"] == "true"
    assert retry["Location"] == "/payments/7/"
    assert retry["ETag"] == '"v1"'
    assert retry["Content-Type"] == first["Content-Type"]
    assert "X-Not-Allow-Listed" not in retry
    assert "session-ish" in first.cookies
    assert "session-ish" not in retry.cookies
    assert "Set-Cookie" not in retry
    assert executions("pay") == 1


def test_retry__replays_binary_body_byte_for_byte(client: Caller, url: str) -> None:
    first = send(client, url, {"binary": True}, key="bin")
    retry = send(client, url, {"binary": True}, key="bin")

    assert first.content == bytes(range(256)) * 4
    assert retry.content == first.content
    assert retry["Content-Type"] == "application/octet-stream"


def test_replay_header__can_allow_list_more_headers(
    client: Caller, url: str, settings: Any
) -> None:
    settings.IDEMPOTENCY_REPLAY_HEADERS = ["X-Not-Allow-Listed"]
    send(client, url, {}, key="k")

    assert send(client, url, {}, key="k")["X-Not-Allow-Listed"] == "dropped on replay"


def test_replay__never_carries_cookies_even_when_allow_listed(
    client: Caller, url: str, settings: Any
) -> None:
    settings.IDEMPOTENCY_REPLAY_HEADERS = ["Set-Cookie", "Date", "Authorization"]
    send(client, url, {"set_cookie": True}, key="k")
    retry = send(client, url, {"set_cookie": True}, key="k")

    assert "session-ish" not in retry.cookies
    assert "Authorization" not in retry


# In flight


def test_in_flight__is_409_with_retry_after(client: Caller, url: str) -> None:
    claim_in_flight(client, url, {"label": "pay"}, "busy", lease=timedelta(seconds=60))

    response = send(client, url, {"label": "pay"}, key="busy")

    assert response.status_code == 409
    assert response["Retry-After"] == "1"
    assert is_problem(response, "idempotency_key_in_progress")
    assert executions() == 0


@through("middleware")  # its plain views take the conflict mode from the settings
def test_in_flight__wait_mode_gives_up_with_409_after_the_wait(
    client: Caller, url: str, settings: Any
) -> None:
    settings.IDEMPOTENCY_WAIT_TIMEOUT = timedelta(milliseconds=200)
    settings.IDEMPOTENCY_ON_CONFLICT = "wait"
    claim_in_flight(client, url, {}, "busy", lease=timedelta(seconds=60))

    response = send(client, url, {}, key="busy")

    assert response.status_code == 409
    assert is_problem(response, "idempotency_key_in_progress")
    assert executions() == 0


# Mismatch


@pytest.mark.parametrize(
    "change",
    [
        {"payload": {"label": "other"}},
        {"query": "?page=2"},
        {"method": "patch"},
    ],
    ids=["body", "query", "method"],
)
def test_mismatch__same_key_different_request_is_422(
    client: Caller, url: str, change: dict[str, Any]
) -> None:
    send(client, url, {"label": "pay"}, key="k")

    response = send(
        client,
        url,
        change.get("payload", {"label": "pay"}),
        key="k",
        **{name: value for name, value in change.items() if name != "payload"},
    )

    assert response.status_code == 422
    assert is_problem(response, "idempotency_key_mismatch")
    assert executions() == 1


def test_retry__with_another_charset_parameter_is_the_same_request(
    client: Caller, url: str
) -> None:
    send(client, url, {"label": "pay"}, key="k")

    retry = send(
        client, url, {"label": "pay"}, key="k", content_type="application/json; charset=utf-8"
    )

    assert retry["Idempotent-Replayed"] == "true"


def test_fingerprint__multipart_body_read_by_the_csrf_check_still_counts() -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory.create())
    secret = "a" * 32
    client.cookies["csrftoken"] = secret

    def post(content: bytes) -> Any:
        upload = SimpleUploadedFile("receipt.txt", content)
        data = {"csrfmiddlewaretoken": secret, "label": "form", "file": upload}
        return client.post("/form/behave/", data, headers={"Idempotency-Key": "k"})

    first = post(b"one")
    retry = post(b"one")
    other_file = post(b"two")

    assert first.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert other_file.status_code == 422
    assert is_problem(other_file, "idempotency_key_mismatch")


def test_fingerprint__custom_function_may_return_any_length(client: Caller, settings: Any) -> None:
    settings.IDEMPOTENCY_FINGERPRINT = lambda request: "f" * 500 + request.body.decode()
    send(client, "/plain/behave/", {"label": "a"}, key="k")

    replay = send(client, "/plain/behave/", {"label": "a"}, key="k")
    other = send(client, "/plain/behave/", {"label": "b"}, key="k")

    assert replay["Idempotent-Replayed"] == "true"
    assert other.status_code == 422
    assert is_problem(other, "idempotency_key_mismatch")


def test_mismatch__different_path_is_422(client: Caller, settings: Any) -> None:
    settings.IDEMPOTENCY_REQUIRED = True
    send(client, "/plain/behave/", {}, key="k")

    response = send(client, "/decorated/behave/", {}, key="k")

    assert response.status_code == 422
    assert is_problem(response, "idempotency_key_mismatch")
    assert executions() == 1


def test_mismatch__status_is_configurable(client: Caller, url: str, settings: Any) -> None:
    settings.IDEMPOTENCY_MISMATCH_STATUS = 409
    send(client, url, {"label": "a"}, key="k")

    response = send(client, url, {"label": "b"}, key="k")

    assert response.status_code == 409
    assert is_problem(response, "idempotency_key_mismatch")


def test_mismatch__against_an_in_flight_key_is_422(client: Caller, url: str) -> None:
    claim_in_flight(client, url, {"label": "a"}, "k", lease=timedelta(seconds=60))

    response = send(client, url, {"label": "b"}, key="k")

    assert response.status_code == 422
    assert is_problem(response, "idempotency_key_mismatch")


# Lease expiry


def test_expired_lease__next_request_takes_over_with_a_new_token(client: Caller, url: str) -> None:
    claim_in_flight(client, url, {"label": "pay"}, "k", lease=timedelta(seconds=60))
    crashed_token = stored_token("k")
    expire_now("k")  # the crashed owner's lease ends, by the store's clock

    response = send(client, url, {"label": "pay"}, key="k")

    assert response.status_code == 201
    assert stored_token("k") != crashed_token
    assert stored_states() == [COMPLETED]
    assert executions("pay") == 1


def test_expired_response__key_can_be_used_again(client: Caller, url: str, settings: Any) -> None:
    send(client, url, {"label": "a"}, key="k")
    expire_now("k")  # its retention ends, by the store's clock

    response = send(client, url, {"label": "b"}, key="k")

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response


# Store unavailable


@pytest.fixture
def broken_store(storage: str) -> Iterator[None]:
    """Make the store unreachable: every query on the table fails, or Redis is a closed port."""
    if storage == "cache":
        with override_settings(CACHES=caches_with(redis_cache_config(free_port()))):
            yield
        return
    with failing_queries(on_the_idempotency_table, "connection refused"):
        yield


@pytest.mark.usefixtures("broken_store")
def test_store_unavailable__fails_closed_with_503(client: Caller, url: str) -> None:
    response = send(client, url, {"label": "pay"}, key="k")

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert is_problem(response, "idempotency_store_unavailable")
    assert executions() == 0


@pytest.mark.usefixtures("broken_store")
def test_store_unavailable__fail_open_runs_logs_and_signals(
    client: Caller, url: str, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.IDEMPOTENCY_FAIL_OPEN = True
    signalled: list[str] = []

    def receiver(**kwargs: Any) -> None:
        signalled.append(kwargs["key"])

    idempotency_failed_open.connect(receiver)
    try:
        with caplog.at_level(logging.WARNING, logger="django_idempotency.outcomes"):
            response = send(client, url, {"label": "pay"}, key="k")
    finally:
        idempotency_failed_open.disconnect(receiver)

    assert response.status_code == 201
    assert executions("pay") == 1
    assert signalled == ["k"]
    assert "fail-open" in caplog.text


@pytest.fixture
def store_fails_at_completion() -> Iterator[None]:
    """Fail the completion's UPDATE as a store going away mid-request would."""
    with failing_queries(on_the_table("UPDATE")):
        yield


# Only DatabaseStorage completes in the view's transaction, so only it can roll the view back
# when the completion fails; CacheStorage answers the view's response and logs the lost record
# (docs/storage-cache.md; test_cache_outage.py stops Redis during the view to show it).
@DATABASE_STORAGE_ONLY
@pytest.mark.usefixtures("store_fails_at_completion")
def test_store_unavailable_at_completion__rolls_the_view_back_with_503(
    client: Caller, url: str
) -> None:
    response = send(client, url, {"label": "pay"}, key="k")

    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert is_problem(response, "idempotency_store_unavailable")
    assert executions() == 0  # the view's writes rolled back with the transaction
    assert stored_records() == []  # and the claim was released


# Responses that cannot be stored


@pytest.mark.parametrize("payload", [{"stream": True}, {"file": True}, {"size": 2048}])
def test_not_storable__first_response_goes_out_and_retries_get_409(
    client: Caller, url: str, settings: Any, payload: dict[str, Any]
) -> None:
    settings.IDEMPOTENCY_MAX_RESPONSE_SIZE = 1024
    first = send(client, url, payload, key="k")
    retry = send(client, url, payload, key="k")

    assert first.status_code == 201
    assert retry.status_code == 409
    assert is_problem(retry, "idempotency_key_not_replayable")
    assert executions() == 1
    assert stored_states() == [NOT_REPLAYABLE]


# What is stored (DESIGN §4)


@pytest.mark.parametrize("status", [200, 201, 204, 400, 404, 422])
def test_stored__2xx_and_deterministic_4xx_replay(client: Caller, url: str, status: int) -> None:
    first = send(client, url, {"status": status}, key="k")
    retry = send(client, url, {"status": status}, key="k")

    assert first.status_code == retry.status_code == status
    assert retry["Idempotent-Replayed"] == "true"
    assert executions() == 1


@pytest.mark.parametrize("status", [409, 429])
def test_not_stored__refusals_release_the_key(
    client: Caller, url: str, storage: str, status: int
) -> None:
    first = send(client, url, {"status": status}, key="k")

    assert first.status_code == status
    # DatabaseStorage rolls the view's write back with its transaction; CacheStorage shares
    # no transaction with the view, so the write stays (docs/storage-cache.md).
    assert executions() == (0 if storage == "database" else 1)
    assert stored_records() == []
    assert send(client, url, {"status": 201}, key="k").status_code == 201


@pytest.mark.parametrize("failure", [{"status": 500}, {"status": 503}, {"raise": True}])
def test_server_error__rolls_back_and_releases_or_without_a_transaction_is_stored(
    client: Caller, url: str, storage: str, failure: dict[str, Any]
) -> None:
    first = send(client, url, failure, key="k")
    retry = send(client, url, failure, key="k")

    assert first.status_code == retry.status_code == failure.get("status", 500)
    if storage == "database":
        # Rolled back with the view's transaction and released: the retry runs afresh.
        assert executions() == 0
        assert stored_records() == []
        assert "Idempotent-Replayed" not in retry
    else:
        # CacheStorage cannot roll the view back: its effects may stand, so the outcome is
        # stored and replayed, never run twice (docs/storage-cache.md).
        assert executions() == 1
        assert retry["Idempotent-Replayed"] == "true"


def test_server_error__without_atomic_mode_is_stored(
    client: Caller, url: str, settings: Any
) -> None:
    settings.IDEMPOTENCY_ATOMIC = False
    first = send(client, url, {"status": 500}, key="k")
    retry = send(client, url, {"status": 500}, key="k")

    assert first.status_code == retry.status_code == 500
    assert retry["Idempotent-Replayed"] == "true"
    assert executions() == 1


def test_exception__without_atomic_mode_stores_an_unknown_outcome(
    client: Caller, url: str, settings: Any
) -> None:
    settings.IDEMPOTENCY_ATOMIC = False
    send(client, url, {"raise": True}, key="k")
    retry = send(client, url, {"raise": True}, key="k")

    assert retry.status_code == 500
    assert retry["Idempotent-Replayed"] == "true"
    assert executions() == 1


def test_exception__in_the_mixin_without_atomic_mode_replays_a_problem_document(
    client: Caller, settings: Any
) -> None:
    # Behind the middleware Django's handler answers first (docs/errors.md, "A replayed 500");
    # the mixin stores the unknown outcome itself, with the type and code every problem has.
    settings.IDEMPOTENCY_ATOMIC = False
    send(client, MIXIN.url, {"raise": True}, key="k")

    retry = send(client, MIXIN.url, {"raise": True}, key="k")

    assert retry.status_code == 500
    assert retry["Idempotent-Replayed"] == "true"
    assert is_problem(retry, "idempotency_outcome_unknown")
    assert retry.json()["type"].endswith("/errors/#idempotency-outcome-unknown")


def test_server_error__without_atomic_mode_and_not_stored_keeps_the_key_for_its_lease(
    client: Caller, url: str, settings: Any
) -> None:
    # The view may have had effects: no retry runs it again before the lease ends (issue 7).
    settings.IDEMPOTENCY_ATOMIC = False
    settings.IDEMPOTENCY_STORE_SERVER_ERRORS = False
    send(client, url, {"status": 500}, key="k")

    retry = send(client, url, {"status": 500}, key="k")

    assert retry.status_code == 409
    assert is_problem(retry, "idempotency_key_in_progress")
    assert executions() == 1
    assert stored_states() == [IN_FLIGHT]


# Scope


def test_scope__same_key_from_two_users_runs_twice(
    client: Caller, url: str, django_user_model: Any
) -> None:
    alice = django_user_model.objects.create_user("alice", password="pw")
    bob = django_user_model.objects.create_user("bob", password="pw")
    client.force_login(alice)
    for_alice = send(client, url, {"label": "pay"}, key="shared")
    client.force_login(bob)
    for_bob = send(client, url, {"label": "pay"}, key="shared")
    mismatch_for_bob = send(client, url, {"label": "other"}, key="shared")

    assert for_alice.status_code == for_bob.status_code == 201
    assert "Idempotent-Replayed" not in for_bob
    assert for_bob.json()["executions"] == 2
    assert mismatch_for_bob.status_code == 422  # against bob's own record only
    assert is_problem(mismatch_for_bob, "idempotency_key_mismatch")
    assert executions("pay") == 2


# Database transactions


@SYNC_ONLY  # Django refuses ATOMIC_REQUESTS for async views.
def test_atomic_requests__compose_with_the_claim(
    client: Caller, url: str, storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)

    first = send(client, url, {"label": "pay"}, key="k")
    retry = send(client, url, {"label": "pay"}, key="k")
    failed = send(client, url, {"raise": True}, key="k2")

    assert first.status_code == 201
    assert retry["Idempotent-Replayed"] == "true"
    assert failed.status_code == 500
    assert executions() == 1
    # The failed request's writes roll back with ATOMIC_REQUESTS either way; DatabaseStorage
    # releases its claim with them, CacheStorage keeps the outcome (docs/storage-cache.md).
    assert stored_keys() == (["k"] if storage == "database" else ["k", "k2"])


def test_atomic_requests__still_wrap_requests_without_a_key(
    client: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)

    response = send(client, "/drf/behave/", {"raise": True})

    assert response.status_code == 500
    assert executions() == 0


# An unkeyed request asks no storage: the storage axis would only repeat.
@DATABASE_STORAGE_ONLY
def test_atomic_requests__commit_the_writes_of_an_unkeyed_mixin_request(
    client: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)

    response = send(client, "/drf/behave/", {"label": "optional"})

    assert response.status_code == 201
    assert executions("optional") == 1
    assert stored_records() == []


def test_drf_validation_error__is_stored_and_replayed(client: Caller) -> None:
    first = send(client, "/drf/required/", {"validation_error": True}, key="k")
    retry = send(client, "/drf/required/", {"validation_error": True}, key="k")

    assert first.status_code == retry.status_code == 400
    assert retry.content == first.content
    assert retry["Idempotent-Replayed"] == "true"


def test_drf_validation_error__under_atomic_requests_rolls_back_and_is_stored(
    client: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)

    first = send(client, "/drf/required/", {"validation_error": True}, key="k")
    retry = send(client, "/drf/required/", {"validation_error": True}, key="k")

    assert first.status_code == retry.status_code == 400
    assert retry["Idempotent-Replayed"] == "true"
    assert executions() == 0  # DRF rolled the request's writes back


# Entry-point rules (DESIGN §6)


def test_mixin_view__is_handled_once_with_the_middleware_installed(client: Caller) -> None:
    send(client, "/drf/required/", {"label": "pay"}, key="k")

    assert len(stored_records()) == 1
    assert send(client, "/drf/required/", {"label": "pay"}, key="k")["Idempotent-Replayed"]


def test_exempt_view__is_left_alone(client: Caller, settings: Any) -> None:
    settings.IDEMPOTENCY_REQUIRED = True

    assert send(client, "/exempt/behave/", {"label": "x"}).status_code == 201
    assert send(client, "/exempt/behave/", {"label": "x"}, key="k").status_code == 201
    assert executions("x") == 2
    assert stored_records() == []


def test_drf_view_without_mixin__is_left_alone_by_the_middleware(client: Caller) -> None:
    # Its users are known only after DRF authenticates: the middleware cannot scope them
    # (docs/behaviour.md, "Security model"); check W002 names such views.
    first = send(client, "/drf-without-mixin/behave/", {"label": "pay"}, key="k")
    retry = send(client, "/drf-without-mixin/behave/", {"label": "pay"}, key="k")

    assert first.status_code == retry.status_code == 201
    assert "Idempotent-Replayed" not in retry
    assert executions("pay") == 2
    assert stored_records() == []


@through("decorator")
def test_decorator__methods_option_covers_delete(client: Caller, url: str) -> None:
    first = send(client, url, {"status": 200}, key="d", method="delete")
    retry = send(client, url, {"status": 200}, key="d", method="delete")

    assert retry["Idempotent-Replayed"] == "true"
    assert first.content == retry.content


@through("middleware")  # its plain views take their methods from the settings
def test_default_methods__leave_put_and_delete_alone(client: Caller, url: str) -> None:
    assert send(client, url, {}, method="put").status_code == 201
    assert send(client, url, {}, method="delete").status_code == 201
