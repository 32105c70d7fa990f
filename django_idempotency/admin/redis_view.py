"""The admin's read view of CacheStorage's records: look one up, list those in flight, act.

With ``CacheStorage`` the model's change list is empty: the records are in Redis. This view,
under the model admin's URLs (``redis/``), finds a record by scope and key, lists in-flight
records from a bounded ``SCAN`` sample, and releases or expires one, asked first and fenced
by the token the operator saw (docs/admin.md, "Records in Redis").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_idempotency.admin.changelist import census_rows
from django_idempotency.admin.previews import (
    content_type_of,
    preview_headers,
    preview_stored_body,
)
from django_idempotency.models import IdempotencyKey
from django_idempotency.storage.base import State, StorageUnavailable
from django_idempotency.storage.registry import configured_storage, is_in_use

if TYPE_CHECKING:
    from django.contrib.admin import ModelAdmin
    from django.utils.functional import _StrOrPromise as StrOrPromise

    from django_idempotency.storage.cache import CacheStorage

#: How many in-flight records the view lists, longest-running first.
LISTED = 100
TEMPLATE = "admin/django_idempotency/idempotencykey/redis.html"
_STATES = frozenset(state.value for state in State)
URL_NAME = "django_idempotency_idempotencykey_redis"

#: Each action's confirmation: its question and what it causes.
_ACTIONS: dict[str, tuple[StrOrPromise, StrOrPromise]] = {
    "release": (
        _("Release this in-flight key?"),
        _(
            "The released key is deleted: its next retry will run the view again. Release it "
            "only when its request has stopped (its worker crashed or timed out); if it is "
            "still running, the retry runs the operation a second time."
        ),
    ),
    "expire": (
        _("Expire this key now?"),
        _(
            "The next retry of this key will run the view again: a completed key forgets its "
            "stored response, so a retried payment is paid again. An in-flight key's lease "
            "ends, and its next retry takes it over."
        ),
    ),
}


def redis_view(model_admin: ModelAdmin[IdempotencyKey], request: HttpRequest) -> HttpResponse:
    """Show a record of (scope, key) and the in-flight records; on POST, act on the one seen."""
    if not model_admin.has_view_permission(request):
        raise PermissionDenied
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": gettext("Idempotency keys in Redis"),
        "opts": IdempotencyKey._meta,
    }
    storage = _cache_storage()
    if storage is None:
        context["not_cache"] = True
        return TemplateResponse(request, TEMPLATE, context)
    if request.method == "POST":
        return _act(model_admin, request, storage, context)
    scope, key = request.GET.get("scope", ""), request.GET.get("key", "")
    context.update(scope=scope, key=key)
    from django_idempotency.storage import cache_operations

    try:
        if scope and key:
            record = cache_operations.look_up(storage, scope, key)
            context.update(looked_up=True, record=record)
            if record is not None:
                context.update(_record_context(model_admin, request, record))
        listed, complete = cache_operations.in_flight(storage, limit=LISTED)
        context["idempotency_census"] = census_rows(storage.census())
    except StorageUnavailable:
        context["unavailable"] = True
        return TemplateResponse(request, TEMPLATE, context, status=503)
    context.update(in_flight=listed, scan_complete=complete, listed_limit=LISTED)
    return TemplateResponse(request, TEMPLATE, context)


def _cache_storage() -> CacheStorage | None:
    """Return the CacheStorage in use: the configured one, or a move's; else ``None``."""
    if not is_in_use("CacheStorage"):
        return None
    from django_idempotency.storage.cache import CacheStorage
    from django_idempotency.storage.moving import MovingStorage

    storage = configured_storage()
    parts = (
        [storage.old_storage, storage.new_storage]
        if isinstance(storage, MovingStorage)
        else [storage]
    )
    return next((part for part in parts if isinstance(part, CacheStorage)), None)


def _record_context(
    model_admin: ModelAdmin[IdempotencyKey], request: HttpRequest, record: Any
) -> dict[str, Any]:
    actions = []
    if model_admin.has_change_permission(request):
        if record.is_in_flight:
            actions.append(("release", gettext("Release")))
        actions.append(("expire", gettext("Expire now")))
    response = record.response
    return {
        "record_actions": actions,
        "headers_preview": preview_headers(response.headers) if response else None,
        "body_preview": (
            preview_stored_body(
                response.body,
                content_type_of(response.headers),
                scope=record.scope,
                key=record.key,
            )
            if response
            else None
        ),
    }


def _act(
    model_admin: ModelAdmin[IdempotencyKey],
    request: HttpRequest,
    storage: CacheStorage,
    context: dict[str, Any],
) -> HttpResponse:
    if not model_admin.has_change_permission(request):
        raise PermissionDenied
    action = request.POST.get("action", "")
    scope, key, token, seen = (
        request.POST.get(name, "") for name in ("scope", "key", "token", "state")
    )
    if action not in _ACTIONS or not (scope and key and token) or seen not in _STATES:
        messages.error(request, gettext("Nothing to do: the form was incomplete."))
        return HttpResponseRedirect(_lookup_url(scope, key))
    if request.POST.get("post") != "yes":
        title, consequence = _ACTIONS[action]
        context.update(title=title, consequence=consequence, scope=scope, key=key, token=token)
        context.update(state=seen)
        context.update(action=action, confirming=True)
        return TemplateResponse(request, TEMPLATE, context)
    from django_idempotency.storage import cache_operations

    try:
        done = cache_operations.drop_as_seen(
            storage, scope, key, token, State(seen), release=action == "release"
        )
    except StorageUnavailable:
        messages.error(request, gettext("Redis did not answer; nothing was changed."))
        return HttpResponseRedirect(_lookup_url(scope, key))
    if done:
        _log(request, scope, key, DELETION if action == "release" else CHANGE, action)
        verb = gettext("Released") if action == "release" else gettext("Expired")
        messages.success(request, gettext("%(verb)s 1 idempotency key.") % {"verb": verb})
    else:
        messages.warning(
            request,
            gettext("Left the key alone: a request completed or took it over meanwhile."),
        )
    return HttpResponseRedirect(_lookup_url(scope, key))


def _log(request: HttpRequest, scope: str, key: str, flag: int, action: str) -> None:
    """Write the admin's history entry: the record is not a row, so it has no object id."""
    user_id = request.user.pk
    if user_id is None:  # the admin's views require a logged-in user
        return
    LogEntry.objects.create(
        user_id=user_id,
        content_type=ContentType.objects.get_for_model(IdempotencyKey),
        object_id=None,
        object_repr=f"{key} ({scope}) in Redis"[:200],
        action_flag=flag,
        change_message=gettext("Released a stuck in-flight key.")
        if action == "release"
        else gettext("Expired now."),
    )


def _lookup_url(scope: str, key: str) -> str:
    base = reverse(f"admin:{URL_NAME}")
    return f"{base}?{urlencode({'scope': scope, 'key': key})}" if scope and key else base
