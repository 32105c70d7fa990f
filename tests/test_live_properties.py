"""Property-based, against a live gunicorn: whoever sends what, the promises of DESIGN §2 hold.

A hypothesis state machine sends POSTs over real HTTP from principals authenticated by a
session, Basic, Token, an ``X-Api-Key`` header and a cookie token, and from anonymous callers
with and without a session, to DRF views with the mixin, DRF views without it and plain views
behind the middleware (tests/live_principals.py). Keys and bodies come from small pools, so
keys collide across principals on purpose, and a view may be asked to fail (raise, answer
what cannot be rendered, answer 500 or 400). After each step it checks the answer against
what this principal itself has seen, and the executions the views committed against what the
test expects:

- a principal never receives another principal's response;
- a principal's key is bound only to its own requests: a replay is its own completed
  response, byte for byte; a 422 only when its own key holds another body; no 409 or 503
  while nothing of its own is in flight and the store is up;
- a request refused by authentication or permissions runs nothing and stores nothing;
- at most one execution per (principal, endpoint, key) on a protected endpoint, and no
  execution the client did not see;
- after any failure, the next requests on the same worker succeed;
- a DRF view without the mixin is left alone: every request runs, nothing is replayed.

The database variant runs one sync worker, so every request reuses the worker that served
the one before; the cache variant runs three. An example that follows one in which a view
failed or a check broke starts on fresh workers, so that each example fails (and shrinks)
for what it does itself.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import cached_property
from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any, ClassVar

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from rest_framework.authtoken.models import Token

from django_idempotency.exceptions import (
    IdempotencyError,
    IdempotencyKeyInProgress,
    IdempotencyKeyMismatch,
    IdempotencyKeyNotReplayable,
    IdempotencyLeaseExpired,
    IdempotencyStoreUnavailable,
)
from django_idempotency.options import DEFAULT_REPLAY_HEADERS
from tests.factories import UserFactory
from tests.live_principals import (
    API_KEY_HEADER,
    API_TOKEN_COOKIE,
    FAILURE_HEADER,
    FAILURES,
    LABEL_PREFIX,
    PRINCIPAL_HEADER,
    parse_execution_label,
)
from tests.live_server import LiveServer, live_gunicorn
from tests.live_urls import WORKER_PID_HEADER
from tests.testapp.models import Execution

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

REQUEST_SECONDS = 30.0
# Never reached in a run: a key left in flight must show as stuck, not expire and hide it.
LEASE_SECONDS = 600
ACCEPT_JSON = {"Accept": "application/json"}
CSRF_SECRET = "propsCsrfSecretPropsCsrfSecret00"  # 32 characters: an unmasked CSRF secret
BODIES = ({"amount": 100}, {"amount": 250})
KEYS = 3

PROPERTY_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=20,
    derandomize=True,
    # The smallest failure only: shrinking each distinct one against a live server takes
    # minutes, and the next one shows once the first is fixed.
    report_multiple_bugs=False,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# --- what the server offers -------------------------------------------------------------------


class Kind(Enum):
    MIXIN = "DRF view with IdempotencyMixin"
    DRF_WITHOUT_MIXIN = "DRF view without the mixin"
    DJANGO = "plain view behind the middleware, @idempotent"


ALL_SCHEMES = frozenset({"session", "basic", "token", "api_key", "cookie"})


@dataclass(frozen=True)
class Endpoint:
    path: str
    kind: Kind
    #: The credentials this view's authentication recognises.
    schemes: frozenset[str]
    #: Whether it serves callers it did not authenticate.
    anonymous: bool

    @property
    def is_protected(self) -> bool:
        """Whether the layer handles keys here (DESIGN §6: not a DRF view without the mixin)."""
        return self.kind is not Kind.DRF_WITHOUT_MIXIN

    def identifies(self, principal: Principal) -> bool:
        return principal.scheme in self.schemes

    def refuses_before_the_view(self, principal: Principal) -> bool:
        """Whether DRF's authentication and permissions refuse the caller (401/403)."""
        return (
            self.kind is not Kind.DJANGO and not self.anonymous and not self.identifies(principal)
        )

    def refuses_in_the_view(self, principal: Principal) -> bool:
        """Whether the plain view answers 403 itself, after the layer had its say."""
        return self.kind is Kind.DJANGO and not self.anonymous and not self.identifies(principal)


ENDPOINTS = {
    "mixin_session": Endpoint("/props/mixin/session/", Kind.MIXIN, frozenset({"session"}), False),
    "mixin_basic": Endpoint("/props/mixin/basic/", Kind.MIXIN, frozenset({"basic"}), False),
    "mixin_token": Endpoint("/props/mixin/token/", Kind.MIXIN, frozenset({"token"}), False),
    "mixin_api_key": Endpoint("/props/mixin/api-key/", Kind.MIXIN, frozenset({"api_key"}), False),
    "mixin_open": Endpoint("/props/mixin/open/", Kind.MIXIN, ALL_SCHEMES, True),
    "drf_api_key": Endpoint(
        "/props/drf/api-key/", Kind.DRF_WITHOUT_MIXIN, frozenset({"api_key"}), False
    ),
    "drf_cookie": Endpoint(
        "/props/drf/cookie/", Kind.DRF_WITHOUT_MIXIN, frozenset({"cookie"}), False
    ),
    "django_login": Endpoint("/props/django/login/", Kind.DJANGO, frozenset({"session"}), False),
    "django_open": Endpoint("/props/django/open/", Kind.DJANGO, frozenset({"session"}), True),
}

#: Two of each scheme, two anonymous guests with a session, two strangers without a cookie.
PRINCIPAL_NAMES = tuple(
    f"{kind}-{who}" for who in "ab" for kind in (*sorted(ALL_SCHEMES), "guest", "stranger")
)


def peer_of(name: str) -> str:
    """Return the other principal of the same kind: the one who might guess this one's key."""
    kind, who = name.rsplit("-", 1)
    return f"{kind}-{'b' if who == 'a' else 'a'}"


@dataclass(frozen=True)
class Credentials:
    name: str
    scheme: str  # one of ALL_SCHEMES, or "anonymous"
    username: str
    headers: dict[str, str]
    cookies: dict[str, str]


def _session(**data: Any) -> str:
    store = import_module(django_settings.SESSION_ENGINE).SessionStore()
    store.update(data)
    store.save()
    return str(store.session_key)


def create_credentials() -> dict[str, Credentials]:
    """Create each principal's user, token and session in the test database."""
    credentials = {}
    for name in PRINCIPAL_NAMES:
        scheme = name.split("-")[0] if name.split("-")[0] in ALL_SCHEMES else "anonymous"
        headers: dict[str, str] = {}
        cookies: dict[str, str] = {}
        username = ""
        if scheme != "anonymous":
            user: User = UserFactory.create(username=f"props-{name}")
            username = user.username
            token = Token.objects.create(user=user).key
        if scheme == "session":
            cookies[django_settings.SESSION_COOKIE_NAME] = _session(
                **{
                    SESSION_KEY: str(user.pk),
                    BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                    HASH_SESSION_KEY: user.get_session_auth_hash(),
                }
            )
            # SessionAuthentication enforces CSRF for session users.
            cookies[django_settings.CSRF_COOKIE_NAME] = CSRF_SECRET
            headers["X-CSRFToken"] = CSRF_SECRET
        elif scheme == "basic":
            basic = base64.b64encode(f"{username}:password".encode()).decode()
            headers["Authorization"] = f"Basic {basic}"
        elif scheme == "token":
            headers["Authorization"] = f"Token {token}"
        elif scheme == "api_key":
            headers[API_KEY_HEADER] = token
        elif scheme == "cookie":
            cookies[API_TOKEN_COOKIE] = token
        elif name.startswith("guest-"):
            cookies[django_settings.SESSION_COOKIE_NAME] = _session(cart=name)
        credentials[name] = Credentials(name, scheme, username, headers, cookies)
    return credentials


# --- talking to it ----------------------------------------------------------------------------


def _problem_codes() -> dict[str, str]:
    """Map each IdempotencyError's DRF detail text to its code (the mixin renders DRF-style)."""
    codes, pending = {}, [IdempotencyError]
    while pending:
        error = pending.pop()
        codes[error.default_detail] = error.default_code
        pending.extend(error.__subclasses__())
    return codes


PROBLEM_CODES = _problem_codes()
#: Problems about a key's own record: never a refusal of an anonymous caller.
RECORD_CODES = frozenset(
    error.default_code
    for error in (
        IdempotencyKeyInProgress,
        IdempotencyKeyMismatch,
        IdempotencyKeyNotReplayable,
        IdempotencyLeaseExpired,
        IdempotencyStoreUnavailable,
    )
)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    @property
    def replayed(self) -> bool:
        return self.header("Idempotent-Replayed") == "true"

    @property
    def worker(self) -> str | None:
        return self.header(WORKER_PID_HEADER)

    @property
    def cookies(self) -> SimpleCookie:
        jar = SimpleCookie()
        for name, value in self.headers:
            if name.lower() == "set-cookie":
                jar.load(value)
        return jar

    @property
    def replayed_headers(self) -> dict[str, str]:
        """The allow-listed headers a replay must carry as the original did (DESIGN §3)."""
        return {n.lower(): v for n, v in self.headers if n.lower() in DEFAULT_REPLAY_HEADERS}

    @cached_property
    def document(self) -> dict[str, Any] | None:
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        return document if isinstance(document, dict) else None

    @property
    def who(self) -> str | None:
        """The principal whose request produced this body, when one of the views did."""
        return None if self.document is None else self.document.get("who")

    @property
    def nonce(self) -> str | None:
        return None if self.document is None else self.document.get("nonce")

    @property
    def problem_code(self) -> str | None:
        """The idempotency problem's code: the middleware's ``code``, or the mixin's detail."""
        if self.document is None or self.who is not None:
            return None
        code = self.document.get("code")
        if isinstance(code, str):
            return code
        return PROBLEM_CODES.get(str(self.document.get("detail")))

    def __str__(self) -> str:
        flag = " (replayed)" if self.replayed else ""
        return f"{self.status}{flag} from worker {self.worker}: {self.body[:300]!r}"


def send(url: str, *, method: str, headers: dict[str, str], data: bytes | None = None) -> Answer:
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_SECONDS) as response:
            return Answer(response.status, tuple(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, tuple(error.headers.items()), error.read())


@dataclass
class Principal:
    """One caller: its credentials, and the cookies it holds now (a server may add some)."""

    credentials: Credentials
    cookies: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.cookies = dict(self.credentials.cookies)

    @property
    def name(self) -> str:
        return self.credentials.name

    @property
    def scheme(self) -> str:
        return self.credentials.scheme

    @property
    def has_session(self) -> bool:
        return django_settings.SESSION_COOKIE_NAME in self.cookies

    def post(self, url: str, key: str, body: dict[str, Any], failure: str | None) -> Answer:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": key,
            PRINCIPAL_HEADER: self.name,
            **self.credentials.headers,
        }
        if failure is not None:
            headers[FAILURE_HEADER] = failure
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{n}={v}" for n, v in self.cookies.items())
        answer = send(url, method="POST", headers=headers, data=json.dumps(body).encode())
        for name, morsel in answer.cookies.items():
            if morsel["max-age"] == "0":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = morsel.value
        return answer


# --- the live server --------------------------------------------------------------------------


def is_atomic(server: LiveServer) -> bool:
    """Say whether the view's writes and the stored response share one transaction."""
    return server.storage == "database"


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("database", 1), id="database-1-worker"),
        pytest.param(("cache", 3), id="cache-3-workers", marks=pytest.mark.redis),
    ],
)
def server(
    request: pytest.FixtureRequest,
    django_db_setup: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    """A gunicorn with sync workers on the test database, stopped however the tests end."""
    storage, workers = request.param
    with live_gunicorn(
        log=tmp_path_factory.mktemp("gunicorn") / "gunicorn.log",
        storage=storage,
        lease=LEASE_SECONDS,
        workers=workers,
        settings_module="tests.live_props_settings",
    ) as server:
        yield server


# --- the promises -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """A request someone sent: the same principal or another may send it again."""

    principal: str
    endpoint: str
    key: int
    body: int


#: Whose record: a principal, a key, and whether the layer identifies the principal. A caller
#: has one scope on every protected endpoint (DESIGN §1), so one record per realm; to the
#: layer, the unidentified side of a principal is another caller.
Realm = tuple[str, int, bool]


@dataclass
class Record:
    """What a principal's own key holds, as far as the principal has seen."""

    request: Sent
    first: Answer
    #: False when the layer may or may not have kept it (a plain view's own 403).
    stored: bool

    def is_for(self, request: Sent) -> bool:
        return (self.request.endpoint, self.request.body) == (request.endpoint, request.body)


def assert_not_another_principals_response(
    answer: Answer, principal: str, owners: dict[str, str]
) -> None:
    """A principal never receives another principal's response (DESIGN §2.2)."""
    assert answer.who in (None, principal), (
        f"{principal} received {answer.who}'s response: {answer}"
    )
    owner = owners.get(answer.nonce or "")
    assert owner in (None, principal), f"{principal} received {owner}'s response: {answer}"


def assert_replay_never_sets_cookies(answer: Answer) -> None:
    """A replay never carries Set-Cookie (DESIGN §3)."""
    if answer.replayed:
        assert answer.header("Set-Cookie") is None, f"a replay set cookies: {answer}"


def assert_refused_without_effect(answer: Answer, principal: str) -> None:
    """A caller that the view's authentication or permissions refuse gets 401/403, as with a
    fresh key: nothing runs, nothing replays (and nothing is stored, as later steps see)."""
    assert answer.status in (401, 403), f"{principal} should have been refused: {answer}"
    assert not answer.replayed, f"{principal} got a replay instead of its refusal: {answer}"


def assert_left_alone(answer: Answer, principal: str) -> None:
    """The middleware leaves a DRF view without the mixin alone: keys are ignored there,
    every request runs and nothing is replayed (DESIGN §6)."""
    assert not answer.replayed, f"{principal} got a replay from a view left alone: {answer}"
    code = answer.problem_code
    assert code is None, f"{principal} got {code} from a view left alone: {answer}"


def assert_replay_is_own_response(
    answer: Answer, record: Record | None, request: Sent, atomic: bool
) -> None:
    """A replay is this principal's own completed response to this very request: the
    original status, the exact body bytes and the allow-listed headers (DESIGN §2.3)."""
    assert record is not None, f"replayed what this principal never got for this key: {answer}"
    assert record.is_for(request), f"replayed the response to {record.request}: {answer}"
    first = record.first
    if first.status >= 500 and not atomic and answer.status == first.status and not answer.who:
        return  # the stored "unknown outcome" of a run that raised (DESIGN §4)
    assert (answer.status, answer.body, answer.replayed_headers) == (
        first.status,
        first.body,
        first.replayed_headers,
    ), f"the replay {answer} differs from the original {first}"


def assert_mismatch_is_own(answer: Answer, record: Record | None, request: Sent) -> None:
    """A key answers 422 only when this principal's own key holds another request (§3)."""
    assert record is not None, f"422 for a key this principal never used: {answer}"
    assert not record.is_for(request), f"422 for the request the key was used for: {answer}"


def assert_refusal_is_for_anonymous(
    answer: Answer, code: str, anonymous_without_session: bool
) -> None:
    """The layer refuses a key only to an anonymous caller without a session, with a coded
    4xx problem; it never answers 409 or 503 while nothing of the caller's own is in flight
    and the store is up (DESIGN §2.2, §2.5)."""
    assert code not in RECORD_CODES, f"{code} though nothing of this principal's runs: {answer}"
    assert 400 <= answer.status < 500, f"a problem that is not a 4xx: {answer}"
    assert anonymous_without_session, f"refused a caller the layer can scope: {answer}"


def assert_runs_at_most_once(answer: Answer, record: Record | None) -> None:
    """A principal's completed key never runs again: a retry replays it, another request
    with it gets 422 (DESIGN §2.1)."""
    assert record is None or not record.stored, (
        f"a completed key got neither its replay nor 422: {answer}; it first answered "
        f"{record.first}"
    )


def assert_ran_as_asked(
    answer: Answer, principal: Principal, status: int, user: str, owners: dict[str, str]
) -> None:
    """A request that runs gets its own view's answer: the status the view chose, so never a
    5xx unless the view was asked to fail, and a body never served before."""
    assert answer.status == status, f"{principal.name} expected {status}, got {answer}"
    if answer.status == 500 and answer.who is None:
        return  # the view raised or could not render: Django's own error page
    assert answer.who == principal.name, f"not the view's answer: {answer}"
    assert answer.nonce is not None, f"not the view's answer: {answer}"
    assert answer.nonce not in owners, f"an answer served twice: {answer}"
    assert answer.document is not None
    seen_as = answer.document.get("user", user)
    assert seen_as == user, f"the view saw {seen_as!r}, not {user!r}: {answer}"


def assert_worker_still_serves(answer: Answer) -> None:
    """After any exception in a view or renderer, later requests on that worker succeed."""
    assert answer.status == 200, f"a plain GET failed after earlier requests: {answer}"


def assert_executions_as_seen(
    runs: Counter[tuple[str, str, str]], expected: Counter[tuple[str, str, str]]
) -> None:
    """At most one committed execution per (principal, endpoint, key) on a protected endpoint,
    and every committed execution is one its principal saw run (DESIGN §2.1, §5)."""
    for (who, endpoint, key), count in runs.items():
        if ENDPOINTS[endpoint].is_protected:
            assert count <= 1, f"{who}'s key {key} ran {count} times on {endpoint}"
    assert runs == expected, f"executions committed {dict(runs)}, expected {dict(expected)}"


# --- the state machine ------------------------------------------------------------------------


class LivePromises(RuleBasedStateMachine):
    """Principals send requests; after each step, the promises above are checked."""

    server: ClassVar[LiveServer]
    credentials: ClassVar[dict[str, Credentials]]

    sent = Bundle("sent")

    def __init__(self) -> None:
        super().__init__()
        # Keys unique to this example: earlier examples' records never meet this one's.
        self.prefix = uuid.uuid4().hex[:12]
        self.principals = {n: Principal(c) for n, c in self.credentials.items()}
        self.records: dict[Realm, Record] = {}
        self.expected_runs: Counter[tuple[str, str, str]] = Counter()
        self.owners: dict[str, str] = {}  # nonce -> principal
        # False once a view failed or a check broke: a worker may carry the damage.
        self.clean = True

    @rule(
        target=sent,
        principal=st.sampled_from(PRINCIPAL_NAMES),
        endpoint=st.sampled_from(sorted(ENDPOINTS)),
        key=st.integers(0, KEYS - 1),
        body=st.integers(0, len(BODIES) - 1),
        failure=st.sampled_from((None, *FAILURES)),
    )
    def post(self, principal: str, endpoint: str, key: int, body: int, failure: str | None) -> Sent:
        request = Sent(principal, endpoint, key, body)
        self.send(principal, request, failure)
        return request

    @rule(request=sent, failure=st.sampled_from((None, *FAILURES)))
    def retry(self, request: Sent, failure: str | None) -> None:
        """The principal sends its request again, as a client retrying it would."""
        self.send(request.principal, request, failure)

    @rule(target=sent, request=sent, failure=st.sampled_from((None, *FAILURES)))
    def post_another_body(self, request: Sent, failure: str | None) -> Sent:
        """The principal reuses its key for another request: the other body."""
        changed = replace(request, body=(request.body + 1) % len(BODIES))
        self.send(changed.principal, changed, failure)
        return changed

    @rule(request=sent, failure=st.sampled_from((None, *FAILURES)))
    def post_as_peer(self, request: Sent, failure: str | None) -> None:
        """Another principal of the same kind sends the same request with the same key."""
        self.send(peer_of(request.principal), request, failure)

    @rule(
        request=sent,
        principal=st.sampled_from(PRINCIPAL_NAMES),
        failure=st.sampled_from((None, *FAILURES)),
    )
    def post_as(self, request: Sent, principal: str, failure: str | None) -> None:
        """Any principal sends the same request with the same key."""
        self.send(principal, request, failure)

    @rule()
    def browse(self) -> None:
        clean, self.clean = self.clean, False
        assert_worker_still_serves(
            send(self.server.url + "/props/health/", method="GET", headers=ACCEPT_JSON)
        )
        self.clean = clean

    @invariant()
    def executions(self) -> None:
        clean, self.clean = self.clean, False
        runs: Counter[tuple[str, str, str]] = Counter()
        labels = Execution.objects.filter(
            label__startswith=f"{LABEL_PREFIX}|", label__contains=f"|{self.prefix}-"
        ).values_list("label", flat=True)
        for label in labels:
            who, endpoint, key, _nonce = parse_execution_label(label)
            runs[who, endpoint, key] += 1
        assert_executions_as_seen(runs, self.expected_runs)
        self.clean = clean

    def teardown(self) -> None:
        # The next example starts on workers that no failure touched, so that each example
        # fails for what it does itself, and shrinks to that.
        if not self.clean:
            self.server.recycle_workers()

    def send(self, name: str, request: Sent, failure: str | None) -> None:
        clean, self.clean = self.clean, False
        answer = self.check(self.principals[name], request, failure)
        self.clean = clean and failure is None and answer.status < 500

    def check(self, principal: Principal, request: Sent, failure: str | None) -> Answer:
        endpoint = ENDPOINTS[request.endpoint]
        name = principal.name
        key = f"{self.prefix}-{request.key}"
        had_session = principal.has_session
        answer = principal.post(self.server.url + endpoint.path, key, BODIES[request.body], failure)

        assert_not_another_principals_response(answer, name, self.owners)
        assert_replay_never_sets_cookies(answer)
        if endpoint.refuses_before_the_view(principal):
            event("refused by DRF")
            assert_refused_without_effect(answer, name)
            return answer
        if not endpoint.is_protected:
            event("left alone")
            assert_left_alone(answer, name)
            self.ran(principal, endpoint, request, answer, failure)
            return answer

        record = self.records.get((name, request.key, endpoint.identifies(principal)))
        if answer.replayed:
            event("replayed" if record is None or record.first.who else "replayed a failure")
            assert_replay_is_own_response(answer, record, request, is_atomic(self.server))
            assert record is not None
            record.stored = True
            return answer
        code = answer.problem_code
        if code == IdempotencyKeyMismatch.default_code:
            event("422 for another request")
            assert_mismatch_is_own(answer, record, request)
            assert record is not None
            record.stored = True
            return answer
        if code is not None:
            event(f"refused by the layer: {code}")
            anonymous = not endpoint.identifies(principal)
            assert_refusal_is_for_anonymous(answer, code, anonymous and not had_session)
            return answer
        event("ran after a key of its own" if record else "ran")
        assert_runs_at_most_once(answer, record)
        self.ran(principal, endpoint, request, answer, failure)
        return answer

    def ran(
        self,
        principal: Principal,
        endpoint: Endpoint,
        request: Sent,
        answer: Answer,
        failure: str | None,
    ) -> None:
        """Check a request that ran its view, and learn what it stored and committed."""
        refused = endpoint.refuses_in_the_view(principal)
        status = 403 if refused else {None: 201, "400": 400}.get(failure, 500)
        user = principal.credentials.username if endpoint.identifies(principal) else ""
        assert_ran_as_asked(answer, principal, status, user, self.owners)
        if answer.nonce is not None:
            self.owners[answer.nonce] = principal.name

        slot = (principal.name, request.endpoint, f"{self.prefix}-{request.key}")
        if not endpoint.is_protected:
            self.expected_runs[slot] += 1  # no transaction around it: its write stays
            return
        realm = (principal.name, request.key, endpoint.identifies(principal))
        if refused:
            # The view's own refusal wrote nothing; the layer may keep it for this caller.
            self.records[realm] = Record(request, answer, stored=False)
        elif answer.status >= 500 and is_atomic(self.server):
            # Rolled back with the view's transaction: nothing happened, the key is free.
            self.records.pop(realm, None)
        else:
            self.expected_runs[slot] += 1
            self.records[realm] = Record(request, answer, stored=True)


def test_live_server__random_principals_and_failures_keep_the_promises(
    server: LiveServer, request: pytest.FixtureRequest
) -> None:
    if server.storage == "cache":
        request.getfixturevalue("redis_cache")
    machine = type(
        "LivePromises",
        (LivePromises,),
        {"server": server, "credentials": create_credentials()},
    )
    try:
        run_state_machine_as_test(machine, settings=PROPERTY_SETTINGS)
    except BaseException:
        print(f"gunicorn log ({server.storage}):\n{server.log_tail(4000)}")
        raise
