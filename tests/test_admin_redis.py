"""The admin's view of CacheStorage's records, on real Redis: look up, list in flight, act.

Records written by real requests through the DRF mixin; the actions are asked first and fenced
by the token the operator saw, as the model admin's are (test_admin).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings
from django.urls import reverse
from redis.client import Pipeline

from django_idempotency.storage.base import Claim, StoredResponse
from django_idempotency.storage.registry import configured_storage
from tests.records import stored_records, stored_token
from tests.redis_servers import caches_with, free_port, redis_cache_config
from tests.test_behaviour import claim_in_flight, executions, scope_of, send

pytestmark = pytest.mark.django_db(transaction=True)

#: Run on CacheStorage over real Redis (the storage_backend fixture).
ON_REDIS = pytest.mark.parametrize(
    "storage_backend", [pytest.param("cache", marks=pytest.mark.redis)], indirect=True
)
URL = "/drf/required/"


def redis_page() -> str:
    return reverse("admin:django_idempotency_idempotencykey_redis")


@pytest.fixture
def caller() -> Client:
    """A signed-in API client whose requests write the records."""
    client = Client(raise_request_exception=False)
    client.force_login(User.objects.create_user("customer"))
    return client


def look_up(admin_client: Client, scope: str, key: str) -> Any:
    return admin_client.get(redis_page(), {"scope": scope, "key": key})


@ON_REDIS
def test_look_up__shows_a_completed_record_and_offers_only_expire(
    storage_backend: str, admin_client: Client, caller: Client
) -> None:
    send(caller, URL, {"label": "pay"}, key="paid")

    page = look_up(admin_client, scope_of(caller), "paid").content.decode()

    assert "completed" in page
    assert stored_token("paid") in page
    assert "&quot;label&quot;: &quot;pay&quot;" in page  # the body preview, escaped
    assert 'value="expire"' in page
    assert 'value="release"' not in page


@ON_REDIS
def test_look_up__says_when_redis_holds_no_record(
    storage_backend: str, admin_client: Client
) -> None:
    page = look_up(admin_client, "user:auth.user:1", "never").content.decode()

    assert "Redis holds no record of this scope and key" in page


@ON_REDIS
def test_in_flight__lists_running_keys_with_a_link_to_each(
    storage_backend: str, admin_client: Client, caller: Client
) -> None:
    claim_in_flight(caller, URL, {"label": "pay"}, "running", timedelta(minutes=5))
    send(caller, URL, {"label": "done"}, key="done")

    page = admin_client.get(redis_page()).content.decode()

    assert "<code>running</code>" in page
    assert "<code>done</code>" not in page
    assert "key=running" in page
    # The census above, from the same bounded SCAN: one in flight, one completed.
    assert "<dt>In flight</dt><dd>1</dd>" in page
    assert "<dt>Completed</dt><dd>1</dd>" in page


@ON_REDIS
def test_release__asks_first_then_frees_the_key_and_logs_it(
    storage_backend: str, admin_client: Client, caller: Client
) -> None:
    claim_in_flight(caller, URL, {"label": "pay"}, "stuck", timedelta(minutes=5))
    seen = {"scope": scope_of(caller), "key": "stuck", "token": stored_token("stuck")}
    seen["state"] = "in_flight"

    asked = admin_client.post(redis_page(), {**seen, "action": "release"})

    assert "its next retry will run the view again" in asked.content.decode()
    assert len(stored_records()) == 1  # nothing done yet
    done = admin_client.post(
        redis_page(), {**seen, "action": "release", "post": "yes"}, follow=True
    )
    assert "Released 1 idempotency key." in done.content.decode()
    assert stored_records() == []
    (entry,) = LogEntry.objects.all()
    assert entry.action_flag == DELETION
    assert entry.object_repr == f"stuck ({scope_of(caller)}) in Redis"
    assert send(caller, URL, {"label": "pay"}, key="stuck").status_code == 201


@ON_REDIS
def test_expire__makes_the_next_retry_run_again(
    storage_backend: str, admin_client: Client, caller: Client
) -> None:
    send(caller, URL, {"label": "pay"}, key="paid")
    seen = {"scope": scope_of(caller), "key": "paid", "token": stored_token("paid")}
    seen["state"] = "completed"

    admin_client.post(redis_page(), {**seen, "action": "expire", "post": "yes"})

    assert LogEntry.objects.get().action_flag == CHANGE
    send(caller, URL, {"label": "pay"}, key="paid")
    assert executions("pay") == 2


@ON_REDIS
def test_actions__leave_a_key_alone_that_changed_since_it_was_seen(
    storage_backend: str, admin_client: Client, caller: Client
) -> None:
    # The operator saw one request's claim; another took the key over since.
    claim_in_flight(caller, URL, {"label": "pay"}, "k", timedelta(minutes=5))
    seen = {"scope": scope_of(caller), "key": "k", "token": "the-token-seen-before"}
    seen["state"] = "in_flight"

    done = admin_client.post(
        redis_page(), {**seen, "action": "release", "post": "yes"}, follow=True
    )

    assert "Left the key alone" in done.content.decode()
    assert len(stored_records()) == 1
    assert not LogEntry.objects.exists()


@ON_REDIS
def test_release__is_refused_on_a_completed_record(
    storage_backend: str, admin_client: Client, caller: Client
) -> None:
    send(caller, URL, {"label": "pay"}, key="paid")
    seen = {"scope": scope_of(caller), "key": "paid", "token": stored_token("paid")}
    seen["state"] = "completed"

    admin_client.post(redis_page(), {**seen, "action": "release", "post": "yes"})

    assert len(stored_records()) == 1
    assert executions("pay") == 1


@ON_REDIS
def test_view_permission__reads_but_cannot_act(storage_backend: str, caller: Client) -> None:
    send(caller, URL, {"label": "pay"}, key="paid")
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_idempotencykey"))
    client = Client()
    client.force_login(viewer)
    seen = {"scope": scope_of(caller), "key": "paid", "token": stored_token("paid")}
    seen["state"] = "completed"

    page = look_up(client, seen["scope"], "paid")
    refused = client.post(redis_page(), {**seen, "action": "expire", "post": "yes"})

    assert page.status_code == 200
    assert 'value="expire"' not in page.content.decode()
    assert refused.status_code == 403
    assert len(stored_records()) == 1


@ON_REDIS
def test_redis_down__is_a_503_page_not_an_error(storage_backend: str, admin_client: Client) -> None:
    assert configured_storage()  # CacheStorage, before Redis goes away
    with override_settings(CACHES=caches_with(redis_cache_config(free_port()))):
        page = admin_client.get(redis_page())

    assert page.status_code == 503
    assert "Redis did not answer" in page.content.decode()


@ON_REDIS
def test_change_list__points_to_the_redis_view(storage_backend: str, admin_client: Client) -> None:
    page = admin_client.get(reverse("admin:django_idempotency_idempotencykey_changelist"))

    assert redis_page() in page.content.decode()


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_with_database_storage__says_the_records_are_in_the_database(
    storage_backend: str, admin_client: Client
) -> None:
    page = admin_client.get(redis_page()).content.decode()

    assert "IDEMPOTENCY_STORAGE is not CacheStorage" in page


@ON_REDIS
def test_expire__leaves_a_key_alone_that_completed_since_it_was_seen_in_flight(
    storage_backend: str, admin_client: Client, caller: Client
) -> None:
    # The operator saw the key in flight and asked to expire it; before they confirmed, its
    # request completed with the same token. Expiring it now would make the retry pay again.
    claim = configured_storage().claim(
        scope_of(caller), "k", "fingerprint", lease=timedelta(minutes=5)
    )
    assert isinstance(claim, Claim)
    seen = {"scope": scope_of(caller), "key": "k", "token": claim.token, "state": "in_flight"}
    configured_storage().complete(claim, StoredResponse(201, body=b"paid"), ttl=timedelta(hours=1))

    done = admin_client.post(redis_page(), {**seen, "action": "expire", "post": "yes"}, follow=True)

    assert "Left the key alone" in done.content.decode()
    assert [state for _scope, _key, state in stored_records()] == ["completed"]


@ON_REDIS
def test_in_flight__never_reads_the_sampled_records_bodies(
    storage_backend: str, admin_client: Client, caller: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sample holds up to 10,000 records, each body up to IDEMPOTENCY_MAX_RESPONSE_SIZE:
    # reading them all to list the in-flight ones took 415 MiB for 200 bodies of 1 MiB.
    send(caller, URL, {"label": "pay"}, key="paid")
    claim_in_flight(caller, URL, {"label": "pay"}, "running", timedelta(minutes=5))
    asked: list[tuple[Any, ...]] = []
    hmget = Pipeline.hmget

    def recording(self: Pipeline, name: Any, keys: Any, *args: Any) -> Any:
        asked.append((keys, *args))
        return hmget(self, name, keys, *args)

    monkeypatch.setattr(Pipeline, "hmget", recording)

    page = admin_client.get(redis_page()).content.decode()

    assert "<code>running</code>" in page
    assert asked
    assert all("body" not in fields for fields in asked)


@ON_REDIS
def test_staff_without_view_permission__is_refused(storage_backend: str) -> None:
    client = Client()
    client.force_login(User.objects.create_user("clerk", is_staff=True))

    assert client.get(redis_page()).status_code == 403


@ON_REDIS
def test_an_incomplete_or_forged_form__does_nothing_and_says_so(
    storage_backend: str, admin_client: Client, caller: Client
) -> None:
    send(caller, URL, {"label": "pay"}, key="paid")
    seen = {"scope": scope_of(caller), "key": "paid", "token": stored_token("paid")}

    for form in ({**seen, "action": "expire"}, {**seen, "action": "drop", "state": "completed"}):
        done = admin_client.post(redis_page(), {**form, "post": "yes"}, follow=True)
        assert "Nothing to do: the form was incomplete." in done.content.decode()
    assert len(stored_records()) == 1


@ON_REDIS
def test_an_action_when_redis_does_not_answer__changes_nothing_and_says_so(
    storage_backend: str, admin_client: Client, caller: Client
) -> None:
    send(caller, URL, {"label": "pay"}, key="paid")
    seen = {"scope": scope_of(caller), "key": "paid", "token": stored_token("paid")}
    form = {**seen, "state": "completed", "action": "expire", "post": "yes"}

    with override_settings(CACHES=caches_with(redis_cache_config(free_port()))):
        done = admin_client.post(redis_page(), form)
    page = admin_client.get(done["Location"])

    assert "Redis did not answer; nothing was changed." in page.content.decode()
    assert len(stored_records()) == 1
