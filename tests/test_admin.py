"""The idempotency key admin: list, filters, read-only detail, fenced actions, permissions."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from django_idempotency.admin import (
    EstimatedCountPaginator,
    is_sensitive_header,
    preview_body,
)
from django_idempotency.models import IdempotencyKey
from django_idempotency.testing import close_thread_connections
from tests.factories import IdempotencyKeyFactory

State = IdempotencyKey.State
CHANGELIST = "admin:django_idempotency_idempotencykey_changelist"


def changelist_url(**params: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return reverse(CHANGELIST) + (f"?{query}" if query else "")


def change_url(record: IdempotencyKey) -> str:
    return reverse("admin:django_idempotency_idempotencykey_change", args=[record.pk])


def listed_keys(client: Client, **params: str) -> set[str]:
    response = client.get(changelist_url(**params))
    assert response.status_code == 200
    return {record.key for record in response.context["cl"].result_list}


def run_action(
    client: Client, action: str, *records: IdempotencyKey, confirmed: bool = True, **extra: str
) -> Any:
    """Run an admin action on ``records``; ``confirmed`` answers its confirmation page."""
    return client.post(
        changelist_url(),
        {
            "action": action,
            "_selected_action": [r.pk for r in records],
            "index": 0,
            "post": "yes",
            **extra,
        }
        if confirmed
        else {
            "action": action,
            "_selected_action": [r.pk for r in records],
            "index": 0,
            **extra,
        },
        follow=True,
    )


def history() -> set[tuple[str, int, str]]:
    """The admin's log entries for idempotency keys: (record, action, message)."""
    return {
        (entry.object_repr, entry.action_flag, entry.change_message)
        for entry in LogEntry.objects.filter(content_type__app_label="django_idempotency")
    }


def staff_client(*codenames: str) -> Client:
    user = User.objects.create_user(f"staff-{'-'.join(codenames) or 'none'}", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="django_idempotency", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def records() -> dict[str, IdempotencyKey]:
    now = timezone.now()
    return {
        "in_flight": IdempotencyKeyFactory.create(key="in-flight", in_flight=True),
        "completed": IdempotencyKeyFactory.create(key="completed", scope="user:2"),
        "not_replayable": IdempotencyKeyFactory.create(
            key="not-replayable", state=State.NOT_REPLAYABLE, response_body=b""
        ),
        "expired": IdempotencyKeyFactory.create(key="expired", expired=True),
        "stuck": IdempotencyKeyFactory.create(
            key="stuck", in_flight=True, expires_at=now - timedelta(minutes=5)
        ),
        "client_error": IdempotencyKeyFactory.create(key="client-error", response_status=422),
        "patch": IdempotencyKeyFactory.create(key="patch", method="PATCH", response_status=200),
    }


# --- the list ---------------------------------------------------------------------------


@pytest.mark.django_db
def test_changelist__shows_the_columns(admin_client: Client, records: dict[str, Any]) -> None:
    response = admin_client.get(changelist_url())

    assert response.status_code == 200
    content = response.content.decode()
    for column in ("key", "scope", "state", "method", "path", "response status", "created at"):
        assert f">{column.capitalize()}<" in content or column in content.lower()
    assert "in-flight" in content
    assert "user:2" in content
    assert "completed, expired" in content
    assert "/orders/" in content


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"state": "in_flight"}, {"in-flight"}),
        ({"state": "completed"}, {"completed", "client-error", "patch"}),
        ({"state": "not_replayable"}, {"not-replayable"}),
        ({"state": "expired"}, {"expired", "stuck"}),
        ({"status_class": "4xx"}, {"client-error"}),
        ({"status_class": "2xx"}, {"completed", "not-replayable", "expired", "patch"}),
        ({"status_class": "none"}, {"in-flight", "stuck"}),
        ({"method": "PATCH"}, {"patch"}),
        ({"q": "stuck"}, {"stuck"}),
        ({"q": "user:2"}, {"completed"}),
        ({"q": "stu"}, set()),
    ],
)
@pytest.mark.django_db
def test_changelist__filters_and_search(
    admin_client: Client, records: dict[str, Any], params: dict[str, str], expected: set[str]
) -> None:
    assert listed_keys(admin_client, **params) == expected


@pytest.mark.django_db
def test_changelist__date_hierarchy_drills_into_created_at(
    admin_client: Client, records: dict[str, Any]
) -> None:
    year = records["expired"].created_at.year
    day = records["expired"].created_at

    keys = listed_keys(
        admin_client,
        created_at__year=str(year),
        created_at__month=str(day.month),
        created_at__day=str(day.day),
    )

    assert "expired" in keys
    assert "in-flight" not in keys


@pytest.mark.django_db
def test_changelist__orders_by_indexed_columns_only(
    admin_client: Client, records: dict[str, Any]
) -> None:
    default = admin_client.get(changelist_url())
    by_key = admin_client.get(changelist_url(o="1"))  # the "key" column
    by_expiry = admin_client.get(changelist_url(o="8"))

    def ordering(response: Any) -> set[str]:
        return {field.lstrip("-") for field in response.context["cl"].queryset.query.order_by}

    assert default.context["cl"].queryset.query.order_by[0] == "-created_at"
    assert by_expiry.context["cl"].queryset.query.order_by[0] == "expires_at"
    indexed = {"created_at", "expires_at", "pk"}
    assert ordering(default) <= indexed
    assert ordering(by_key) <= indexed
    assert ordering(by_expiry) <= indexed


@pytest.mark.django_db
def test_changelist__never_counts_the_whole_table(
    admin_client: Client, records: dict[str, Any]
) -> None:
    with CaptureQueriesContext(connection) as queries:
        for params in ({}, {"state": "completed"}, {"q": "stuck"}, {"p": "1"}):
            assert admin_client.get(changelist_url(**params)).status_code == 200

    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts
    assert all("LIMIT" in sql.upper() for sql in counts), counts
    # Nor does a filter list its choices with a DISTINCT over the table.
    assert not [q for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]


@pytest.mark.django_db
def test_changelist__does_not_load_stored_responses(
    admin_client: Client, records: dict[str, Any]
) -> None:
    with CaptureQueriesContext(connection) as queries:
        admin_client.get(changelist_url())

    listing = [q["sql"] for q in queries.captured_queries if "LIMIT 100" in q["sql"].upper()]
    assert listing
    assert all("response_body" not in sql for sql in listing)


@pytest.mark.django_db
def test_paginator__stops_counting_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    IdempotencyKeyFactory.create_batch(8)
    monkeypatch.setattr(EstimatedCountPaginator, "count_limit", 5)
    queryset = IdempotencyKey.objects.filter(state=State.COMPLETED).order_by("-created_at")

    paginator = EstimatedCountPaginator(queryset, 2)

    assert paginator.count == 5
    assert paginator.num_pages == 3


@pytest.mark.postgres
@pytest.mark.django_db
def test_paginator__estimates_an_unfiltered_postgresql_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    IdempotencyKeyFactory.create_batch(30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE django_idempotency_idempotencykey")
    monkeypatch.setattr(EstimatedCountPaginator, "count_limit", 10)
    paginator = EstimatedCountPaginator(IdempotencyKey.objects.order_by("-created_at"), 10)

    with CaptureQueriesContext(connection) as queries:
        count = paginator.count

    assert count == 30
    assert not [q for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]


# --- the detail page --------------------------------------------------------------------


@pytest.mark.django_db
def test_detail__is_read_only(admin_client: Client, records: dict[str, Any]) -> None:
    record = records["completed"]
    response = admin_client.get(change_url(record))

    assert response.status_code == 200
    content = response.content.decode()
    assert record.token in content
    assert record.fingerprint in content
    assert 'name="_save"' not in content
    assert 'name="key"' not in content
    assert "<textarea" not in content

    post = admin_client.post(change_url(record), {"state": State.IN_FLIGHT, "key": "changed"})
    assert post.status_code == 403
    record.refresh_from_db()
    assert (record.state, record.key) == (State.COMPLETED, "completed")


@pytest.mark.django_db
def test_detail__pretty_prints_json(admin_client: Client) -> None:
    record = IdempotencyKeyFactory.create(response_body=b'{"id":7,"items":["a"]}')

    content = admin_client.get(change_url(record)).content.decode()

    assert "{\n  &quot;id&quot;: 7,\n  &quot;items&quot;: [\n    &quot;a&quot;\n  ]\n}" in content


@pytest.mark.django_db
def test_detail__escapes_html_and_hides_sensitive_headers(admin_client: Client) -> None:
    record = IdempotencyKeyFactory.create(
        response_headers=[
            ["Content-Type", "text/html; charset=utf-8"],
            ["Set-Cookie", "sessionid=SECRET-SESSION"],
            ["Authorization", "Bearer SECRET-BEARER"],
            ["X-Auth-Token", "SECRET-TOKEN"],
            ["Location", "/orders/<b>7</b>"],
        ],
        response_body=b"<script>alert('owned')</script>",
    )

    content = admin_client.get(change_url(record)).content.decode()

    assert "<script>alert" not in content
    assert "&lt;script&gt;alert(&#x27;owned&#x27;)&lt;/script&gt;" in content
    assert "/orders/&lt;b&gt;7&lt;/b&gt;" in content
    assert "SECRET" not in content
    assert "3 sensitive headers hidden." in content


@pytest.mark.django_db
def test_detail__shows_binary_as_size_and_type(admin_client: Client) -> None:
    record = IdempotencyKeyFactory.create(
        response_headers=[["Content-Type", "image/png"]], response_body=b"\x89PNG\r\n\x1a\n" * 4
    )

    content = admin_client.get(change_url(record)).content.decode()

    assert "binary, 32 bytes, image/png" in content


@pytest.mark.django_db
def test_detail__shows_lease_and_timings_of_an_in_flight_key(admin_client: Client) -> None:
    record = IdempotencyKeyFactory.create(in_flight=True)

    content = admin_client.get(change_url(record)).content.decode()

    assert "running for" in content
    assert "expires in" in content
    assert record.token in content


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b"", "application/json", "<em>empty</em>"),
        (b'{"a": 1}', "application/problem+json", "{\n  &quot;a&quot;: 1\n}"),
        (b"{not json", "application/json", "{not json"),
        (b"plain <text>", "text/plain", "plain &lt;text&gt;"),
        ("caf\u00e9".encode("latin-1"), "text/plain; charset=latin-1", "caf\u00e9"),
        (b"no type", "", "no type"),
        (b"\x00\x01\x02", "", "binary, 3 bytes, unknown type"),
        (b"\xff\xfe", "", "binary, 2 bytes, unknown type"),
        (b"%PDF-1.7", "application/pdf", "binary, 8 bytes, application/pdf"),
        (b"x", "text/plain; charset=nonsense", "binary, 1 bytes, text/plain"),
    ],
)
def test_preview_body(body: bytes, content_type: str, expected: str) -> None:
    assert expected in preview_body(body, content_type)


def test_preview_body__truncates_long_text() -> None:
    rendered = preview_body(b"a" * 50 + b"<", "text/plain", limit=10)

    assert "a" * 10 + "</pre>" in rendered
    assert "Truncated: the first 10 of 51 characters." in rendered
    assert "&lt;" not in rendered


def test_preview_body__survives_deeply_nested_json() -> None:
    body = b"[" * 100_000 + b"]" * 100_000

    assert "[[[" in preview_body(body, "application/json", limit=50)


@pytest.mark.parametrize(
    ("name", "hidden"),
    [
        ("Set-Cookie", True),
        ("cookie", True),
        ("Authorization", True),
        ("Proxy-Authorization", True),
        ("X-Api-Key", True),
        ("X-CSRF-Token", True),
        ("Content-Type", False),
        ("Location", False),
    ],
)
def test_is_sensitive_header(name: str, hidden: bool) -> None:
    assert is_sensitive_header(name) is hidden


# --- actions ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin__has_no_add(admin_client: Client) -> None:
    add = reverse("admin:django_idempotency_idempotencykey_add")

    assert admin_client.get(add).status_code == 403
    assert add not in admin_client.get(changelist_url()).content.decode()


@pytest.mark.django_db
def test_release__deletes_in_flight_and_leaves_completed(
    admin_client: Client, records: dict[str, Any]
) -> None:
    response = run_action(
        admin_client, "release_keys", records["stuck"], records["in_flight"], records["completed"]
    )

    assert set(IdempotencyKey.objects.values_list("key", flat=True)) == {
        "completed",
        "not-replayable",
        "expired",
        "client-error",
        "patch",
    }
    messages = [str(m) for m in response.context["messages"]]
    assert "Released 2 idempotency keys." in messages
    assert "Left 1 key alone: it was not eligible or changed meanwhile." in messages


@pytest.mark.django_db
def test_expire__ends_the_lease_or_retention_now(
    admin_client: Client, records: dict[str, Any]
) -> None:
    before = timezone.now()
    run_action(admin_client, "expire_keys", records["in_flight"], records["completed"])

    for name in ("in_flight", "completed"):
        record = IdempotencyKey.objects.get(pk=records[name].pk)
        assert before <= record.expires_at <= timezone.now()
        assert record.state == records[name].state
        assert record.token == records[name].token
    assert IdempotencyKey.objects.live().count() == 3


@pytest.mark.django_db
def test_delete_selected__deletes_after_confirmation(
    admin_client: Client, records: dict[str, Any]
) -> None:
    confirm = run_action(
        admin_client, "delete_selected", records["expired"], records["stuck"], confirmed=False
    )
    assert "Are you sure" in confirm.content.decode()
    assert IdempotencyKey.objects.count() == len(records)

    done = run_action(admin_client, "delete_selected", records["expired"], records["stuck"])

    assert "Successfully deleted 2" in done.content.decode()
    assert not IdempotencyKey.objects.filter(key__in=["expired", "stuck"]).exists()
    assert IdempotencyKey.objects.count() == len(records) - 2


@pytest.mark.django_db
def test_delete_view__deletes_the_record(admin_client: Client, records: dict[str, Any]) -> None:
    url = reverse("admin:django_idempotency_idempotencykey_delete", args=[records["expired"].pk])

    admin_client.post(url, {"post": "yes"})

    assert not IdempotencyKey.objects.filter(pk=records["expired"].pk).exists()


@pytest.fixture
def before_write() -> Iterator[Callable[[str, Callable[[], None]], None]]:
    """Run a callback just before the next UPDATE or DELETE of idempotency keys."""
    pending: list[tuple[str, Callable[[], None]]] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if pending and sql.lstrip().upper().startswith(pending[0][0]):
            pending.pop(0)[1]()
        return execute(sql, params, many, context)

    with connection.execute_wrapper(wrapper):
        yield lambda verb, callback: pending.append((verb, callback))


def complete_now(record: IdempotencyKey) -> Callable[[], None]:
    """Return what a request completing ``record`` at that moment writes."""

    def complete() -> None:
        IdempotencyKey.objects.filter(pk=record.pk).update(
            state=State.COMPLETED,
            completed_at=timezone.now(),
            expires_at=timezone.now() + timedelta(hours=24),
            response_status=201,
        )

    return complete


def reclaim_now(record: IdempotencyKey) -> Callable[[], None]:
    """Return what a request taking the key over at that moment writes."""

    def reclaim() -> None:
        IdempotencyKey.objects.filter(pk=record.pk).update(
            state=State.IN_FLIGHT, token="f" * 32, expires_at=timezone.now() + timedelta(minutes=1)
        )

    return reclaim


@pytest.mark.django_db
def test_release__a_key_completing_meanwhile_survives(
    admin_client: Client, records: dict[str, Any], before_write: Any
) -> None:
    before_write("DELETE", complete_now(records["stuck"]))

    response = run_action(admin_client, "release_keys", records["stuck"])

    record = IdempotencyKey.objects.get(pk=records["stuck"].pk)
    assert record.state == State.COMPLETED
    assert record.expires_at > timezone.now()
    assert "Released 0 idempotency keys." in [str(m) for m in response.context["messages"]]


@pytest.mark.django_db
def test_expire__a_key_completing_meanwhile_keeps_its_retention(
    admin_client: Client, records: dict[str, Any], before_write: Any
) -> None:
    before_write("UPDATE", complete_now(records["in_flight"]))

    run_action(admin_client, "expire_keys", records["in_flight"])

    record = IdempotencyKey.objects.get(pk=records["in_flight"].pk)
    assert record.state == State.COMPLETED
    assert record.expires_at > timezone.now() + timedelta(hours=23)


@pytest.mark.django_db
def test_delete_selected__a_key_reclaimed_meanwhile_survives(
    admin_client: Client, records: dict[str, Any], before_write: Any
) -> None:
    before_write("DELETE", reclaim_now(records["expired"]))

    response = run_action(admin_client, "delete_selected", records["expired"], post="yes")

    record = IdempotencyKey.objects.get(pk=records["expired"].pk)
    assert (record.state, record.token) == (State.IN_FLIGHT, "f" * 32)
    assert "Kept 1 key that a request changed meanwhile." in response.content.decode()


@pytest.mark.django_db
def test_delete_view__a_key_reclaimed_meanwhile_survives(
    admin_client: Client, records: dict[str, Any], before_write: Any
) -> None:
    url = reverse("admin:django_idempotency_idempotencykey_delete", args=[records["expired"].pk])
    before_write("DELETE", reclaim_now(records["expired"]))

    admin_client.post(url, {"post": "yes"})

    assert IdempotencyKey.objects.get(pk=records["expired"].pk).token == "f" * 32
    assert history() == set()  # kept, so not logged as deleted


@pytest.mark.django_db
def test_history__records_what_each_action_really_did(
    admin_client: Client, records: dict[str, Any]
) -> None:
    run_action(admin_client, "release_keys", records["stuck"], records["completed"])
    run_action(admin_client, "expire_keys", records["in_flight"])
    run_action(admin_client, "delete_selected", records["expired"], post="yes")

    assert history() == {
        (str(records["stuck"]), DELETION, "Released a stuck in-flight key."),
        (str(records["in_flight"]), CHANGE, "Expired now."),
        (str(records["expired"]), DELETION, ""),
    }


@pytest.mark.django_db
def test_history__a_record_kept_by_the_fence_is_not_logged_as_deleted(
    admin_client: Client, records: dict[str, Any], before_write: Any
) -> None:
    before_write("DELETE", reclaim_now(records["expired"]))

    run_action(admin_client, "delete_selected", records["expired"], records["stuck"], post="yes")

    assert IdempotencyKey.objects.filter(pk=records["expired"].pk).exists()
    assert history() == {(str(records["stuck"]), DELETION, "")}


@pytest.mark.django_db
def test_history__a_key_completing_meanwhile_is_not_logged_as_expired(
    admin_client: Client, records: dict[str, Any], before_write: Any
) -> None:
    before_write("UPDATE", complete_now(records["in_flight"]))

    run_action(admin_client, "expire_keys", records["in_flight"], records["completed"])

    assert history() == {(str(records["completed"]), CHANGE, "Expired now.")}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_release__waits_for_a_completion_in_progress_on_another_connection(
    admin_client: Client,
) -> None:
    """A real request's completion holds the row; the release waits, then leaves it alone."""
    record = IdempotencyKeyFactory.create(key="completing", in_flight=True)
    row_locked, may_commit = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def complete_in_another_connection() -> None:
        try:
            with transaction.atomic():
                complete_now(record)()
                row_locked.set()
                may_commit.wait(10)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            close_thread_connections()

    request = threading.Thread(target=complete_in_another_connection)
    request.start()
    assert row_locked.wait(10)
    # The release blocks on the row lock; let the completion commit a moment later.
    threading.Timer(0.3, may_commit.set).start()

    response = run_action(admin_client, "release_keys", record)
    request.join(10)

    assert not errors
    assert IdempotencyKey.objects.get(pk=record.pk).state == State.COMPLETED
    assert "Released 0 idempotency keys." in [str(m) for m in response.context["messages"]]
    assert history() == set()


@pytest.mark.django_db
def test_detail__action_buttons_run_on_the_record(
    admin_client: Client, records: dict[str, Any]
) -> None:
    content = admin_client.get(change_url(records["stuck"])).content.decode()
    assert 'value="release_keys"' in content
    assert 'value="expire_keys"' not in content  # its lease already ended

    run_action(admin_client, "release_keys", records["stuck"])

    assert not IdempotencyKey.objects.filter(pk=records["stuck"].pk).exists()


@pytest.mark.django_db
def test_detail__offers_only_the_actions_that_apply(
    admin_client: Client, records: dict[str, Any]
) -> None:
    def offered(name: str) -> set[str]:
        content = admin_client.get(change_url(records[name])).content.decode()
        return {a for a in ("release_keys", "expire_keys") if f'value="{a}"' in content}

    assert offered("in_flight") == {"release_keys", "expire_keys"}
    assert offered("completed") == {"expire_keys"}  # nothing to release once it completed
    assert offered("expired") == set()


@pytest.mark.django_db
@pytest.mark.parametrize("action", ["expire_keys", "release_keys"])
def test_actions__ask_first_and_say_the_next_retry_runs_again(
    admin_client: Client, records: dict[str, Any], action: str
) -> None:
    target = records["in_flight"]

    page = run_action(admin_client, action, target, records["expired"], confirmed=False)

    content = page.content.decode()
    assert "the next retry of this key will run the view again" in content.lower()
    assert "This changes 1 key:" in content  # the expired record is not eligible
    assert f"<code>{target.key}</code>" in content
    assert 'name="post" value="yes"' in content
    assert IdempotencyKey.objects.get(pk=target.pk).expires_at == target.expires_at


@pytest.mark.django_db
def test_actions__with_nothing_eligible_say_so_without_asking(
    admin_client: Client, records: dict[str, Any]
) -> None:
    response = run_action(admin_client, "release_keys", records["completed"], confirmed=False)

    messages = [str(m) for m in response.context["messages"]]
    assert "Released 0 idempotency keys." in messages
    assert IdempotencyKey.objects.filter(pk=records["completed"].pk).exists()


@pytest.mark.django_db
def test_changelist__summarises_the_keys_by_state_above_the_list(
    admin_client: Client, records: dict[str, Any]
) -> None:
    content = admin_client.get(changelist_url()).content.decode()

    summary = content[content.index('class="idempotency-census"') :]
    summary = summary[: summary.index("</dl>")]
    assert "<dt>In flight</dt><dd>1</dd>" in summary
    assert "<dt>Past their lease</dt><dd>1</dd>" in summary
    assert "<dt>Completed</dt><dd>3</dd>" in summary
    assert "<dt>Expired, awaiting purge</dt><dd>1</dd>" in summary
    assert "<dt>Oldest in flight</dt>" in summary


@pytest.mark.django_db
def test_changelist__offers_no_facet_counts(admin_client: Client, records: dict[str, Any]) -> None:
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist_url(_facets="True"))

    assert response.status_code == 200
    assert "Show counts" not in response.content.decode()
    assert not [q for q in queries.captured_queries if "FILTER (WHERE" in q["sql"].upper()]


# --- permissions ------------------------------------------------------------------------


@pytest.mark.django_db
def test_permissions__non_staff_is_sent_to_login(records: dict[str, Any]) -> None:
    client = Client()
    client.force_login(User.objects.create_user("customer"))

    response = client.get(changelist_url())

    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


@pytest.mark.django_db
def test_permissions__staff_without_permission_is_refused(records: dict[str, Any]) -> None:
    client = staff_client()

    assert client.get(changelist_url()).status_code == 403
    assert client.get(change_url(records["completed"])).status_code == 403


@pytest.mark.django_db
def test_permissions__view_only_staff_sees_but_cannot_act(records: dict[str, Any]) -> None:
    client = staff_client("view_idempotencykey")

    listing = client.get(changelist_url())
    assert listing.status_code == 200
    assert listing.context["action_form"] is None or not [
        name for name, _label in listing.context["action_form"].fields["action"].choices if name
    ]
    detail = client.get(change_url(records["stuck"])).content.decode()
    assert 'value="release_keys"' not in detail

    run_action(client, "release_keys", records["stuck"])
    run_action(client, "delete_selected", records["stuck"], post="yes")

    assert IdempotencyKey.objects.filter(pk=records["stuck"].pk).exists()


@pytest.mark.django_db
def test_permissions__change_allows_release_but_not_delete(records: dict[str, Any]) -> None:
    client = staff_client("view_idempotencykey", "change_idempotencykey")

    choices = {
        name
        for name, _label in client.get(changelist_url())
        .context["action_form"]
        .fields["action"]
        .choices
    }
    assert choices == {"", "release_keys", "expire_keys"}
    run_action(client, "delete_selected", records["expired"], post="yes")
    assert IdempotencyKey.objects.filter(pk=records["expired"].pk).exists()

    run_action(client, "release_keys", records["stuck"])
    assert not IdempotencyKey.objects.filter(pk=records["stuck"].pk).exists()


@pytest.mark.django_db
def test_permissions__delete_allows_delete_selected(records: dict[str, Any]) -> None:
    client = staff_client("view_idempotencykey", "delete_idempotencykey")

    run_action(client, "delete_selected", records["expired"], post="yes")

    assert not IdempotencyKey.objects.filter(pk=records["expired"].pk).exists()


@pytest.mark.django_db
def test_changelist__date_hierarchy_offers_each_day_between_first_and_last(
    admin_client: Client,
) -> None:
    first = timezone.now().replace(day=10, hour=12)
    IdempotencyKeyFactory.create(created_at=first)
    IdempotencyKeyFactory.create(created_at=first + timedelta(days=2))

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(changelist_url())

    content = response.content.decode()
    for day in (10, 11, 12):
        assert f"created_at__day={day}" in content
    assert "created_at__day=13" not in content
    assert not [q for q in queries.captured_queries if "DISTINCT" in q["sql"].upper()]


# The date hierarchy above the day level, and previews of headers in any order.


def test_changelist__date_hierarchy_offers_each_year_between_first_and_last(
    admin_client: Client,
) -> None:
    IdempotencyKeyFactory.create(created_at=datetime(2023, 6, 15, 12, tzinfo=UTC))
    IdempotencyKeyFactory.create(created_at=datetime(2025, 6, 15, 12, tzinfo=UTC))

    content = admin_client.get(reverse(CHANGELIST)).content.decode()

    for year in (2023, 2024, 2025):
        assert f"created_at__year={year}" in content
    assert "created_at__year=2026" not in content


def test_changelist__date_hierarchy_offers_each_month_of_the_chosen_year(
    admin_client: Client,
) -> None:
    IdempotencyKeyFactory.create(created_at=datetime(2025, 3, 5, 12, tzinfo=UTC))
    IdempotencyKeyFactory.create(created_at=datetime(2025, 5, 5, 12, tzinfo=UTC))
    IdempotencyKeyFactory.create(created_at=datetime(2024, 11, 5, 12, tzinfo=UTC))

    response = admin_client.get(reverse(CHANGELIST), {"created_at__year": "2025"})
    content = response.content.decode()

    for month in (3, 4, 5):
        assert f"created_at__month={month}" in content
    assert "created_at__month=11" not in content


def test_detail__pretty_prints_json_whose_content_type_is_not_the_first_header(
    admin_client: Client,
) -> None:
    record = IdempotencyKeyFactory.create(
        response_headers=[["Location", "/orders/7/"], ["Content-Type", "application/json"]],
        response_body=b'{"id":7}',
    )
    url = reverse("admin:django_idempotency_idempotencykey_change", args=[record.pk])

    content = admin_client.get(url).content.decode()

    assert "{\n  &quot;id&quot;: 7\n}" in content
