"""The ``IdempotencyKey`` model admin: find, inspect, release, expire and delete records."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.admin.views.main import ChangeList
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils import timezone
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_idempotency.admin.changelist import (
    EstimatedCountPaginator,
    IdempotencyKeyChangeList,
    census_rows,
)
from django_idempotency.admin.filters import MethodFilter, StateFilter, StatusClassFilter
from django_idempotency.admin.previews import (
    content_type_of,
    preview_headers,
    preview_stored_body,
)
from django_idempotency.admin.redis_view import URL_NAME, redis_view
from django_idempotency.clock import database_now
from django_idempotency.models import (
    IdempotencyKey,
    IdempotencyKeyQuerySet,
    Seen,
    records_database,
)
from django_idempotency.storage.registry import is_in_use


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "key",
        "scope",
        "display_state",
        "method",
        "short_path",
        "response_status",
        "created_at",
        "expires_at",
    )
    list_filter = (StateFilter, StatusClassFilter, MethodFilter)
    # Exact lookups use the (scope, key) and key indexes; icontains would scan the table.
    search_fields = ("key__exact", "scope__exact")
    search_help_text = _("Exact key or scope.")
    date_hierarchy = "created_at"
    ordering = ("-created_at",)
    sortable_by = ("created_at", "expires_at")
    show_full_result_count = False
    # "Show counts" runs one COUNT ... FILTER over the whole table per choice (11 minutes on
    # 10^6 PostgreSQL rows); the census above the list gives the counts by state instead.
    show_facets = admin.ShowFacets.NEVER
    paginator = EstimatedCountPaginator
    list_per_page = 100
    list_max_show_all = 500
    actions = ("release_keys", "expire_keys")
    fieldsets = (
        (None, {"fields": ("scope", "key", "display_state", "method", "path")}),
        (_("Request"), {"fields": ("fingerprint",)}),
        (_("Lease"), {"fields": ("token", "created_at", "completed_at", "expires_at", "timings")}),
        (
            _("Stored response"),
            {"fields": ("response_status", "response_headers_preview", "response_body_preview")},
        ),
    )
    readonly_fields = (
        "scope",
        "key",
        "display_state",
        "method",
        "path",
        "fingerprint",
        "token",
        "created_at",
        "completed_at",
        "expires_at",
        "timings",
        "response_status",
        "response_headers_preview",
        "response_body_preview",
    )

    def get_urls(self) -> list[URLPattern]:
        # Records in Redis are not rows: their read view sits beside the change list.
        redis = path(
            "redis/",
            self.admin_site.admin_view(functools.partial(redis_view, self)),
            name=URL_NAME,
        )
        return [redis, *super().get_urls()]

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Records are written by requests only.
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: IdempotencyKey | None = None
    ) -> bool:
        # The change permission allows the fenced actions; the form itself never saves,
        # since saving a whole row would overwrite a request completing at that moment.
        return obj is None and super().has_change_permission(request)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return IdempotencyKeyChangeList

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        census = IdempotencyKey.objects.using(records_database()).census()
        extra_context = {
            **(extra_context or {}),
            "idempotency_census": census_rows(census),
            "idempotency_in_redis": is_in_use("CacheStorage"),
        }
        return super().changelist_view(request, extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        record = self.get_object(request, object_id)
        actions = []
        if record is not None and super().has_change_permission(request):
            # Only what applies: a finished key has nothing to release, an expired one
            # nothing to expire.
            if record.state == IdempotencyKey.State.IN_FLIGHT:
                actions.append(("release_keys", gettext("Release")))
            if record.expires_at > timezone.now():
                actions.append(("expire_keys", gettext("Expire now")))
        extra_context = {**(extra_context or {}), "idempotency_record_actions": actions}
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.display(description=_("state"))
    def display_state(self, obj: IdempotencyKey) -> str:
        label = str(IdempotencyKey.State(obj.state).label)
        if obj.expires_at <= timezone.now():
            return gettext("%(state)s, expired") % {"state": label}
        return label

    @admin.display(description=_("path"))
    def short_path(self, obj: IdempotencyKey) -> str:
        return obj.path if len(obj.path) <= 60 else f"{obj.path[:59]}…"

    @admin.display(description=_("timings"))
    def timings(self, obj: IdempotencyKey) -> str:
        now = timezone.now()
        parts = []
        if obj.completed_at is not None:
            ran = (obj.completed_at - obj.created_at).total_seconds()
            parts.append(gettext("ran for %(seconds).3f s") % {"seconds": ran})
        else:
            parts.append(gettext("running for %(age)s") % {"age": timesince(obj.created_at, now)})
        if obj.expires_at > now:
            parts.append(gettext("expires in %(left)s") % {"left": timeuntil(obj.expires_at, now)})
        else:
            parts.append(gettext("expired %(ago)s ago") % {"ago": timesince(obj.expires_at, now)})
        return "; ".join(parts)

    @admin.display(description=_("response headers"))
    def response_headers_preview(self, obj: IdempotencyKey) -> SafeString:
        return preview_headers(obj.response_headers)

    @admin.display(description=_("response body"))
    def response_body_preview(self, obj: IdempotencyKey) -> SafeString:
        return preview_stored_body(
            bytes(obj.response_body),
            content_type_of(obj.response_headers),
            scope=obj.scope,
            key=obj.key,
        )

    @admin.action(permissions=["change"], description=_("Release selected stuck in-flight keys"))
    def release_keys(
        self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]
    ) -> TemplateResponse | None:
        using = records_database()
        eligible = _on(using, queryset).in_flight()
        if request.POST.get("post") != "yes":
            return self.confirm(
                request,
                queryset,
                eligible,
                action="release_keys",
                title=gettext("Release in-flight keys?"),
                consequence=gettext(
                    "Each released key is deleted: the next retry of this key will run the "
                    "view again. Release a key only when its request has stopped (its worker "
                    "crashed or timed out); if it is still running, the retry runs the "
                    "operation a second time."
                ),
            )
        selected = queryset.count()
        released = IdempotencyKey.objects.using(using).delete_as_seen(eligible.as_seen())
        self.log(request, released, DELETION, gettext("Released a stuck in-flight key."))
        self.report(request, selected, len(released), gettext("Released"))
        return None

    @admin.action(permissions=["change"], description=_("Expire selected keys now"))
    def expire_keys(
        self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]
    ) -> TemplateResponse | None:
        using = records_database()
        now = database_now(using)
        eligible = _on(using, queryset).live(now)
        if request.POST.get("post") != "yes":
            return self.confirm(
                request,
                queryset,
                eligible,
                action="expire_keys",
                title=gettext("Expire keys now?"),
                consequence=gettext(
                    "The next retry of this key will run the view again: a completed key "
                    "forgets its stored response, so a retried payment is paid again. An "
                    "in-flight key's lease ends, and its next retry takes it over."
                ),
            )
        selected = queryset.count()
        expired = IdempotencyKey.objects.using(using).expire_as_seen(eligible.as_seen(), now)
        self.log(request, expired, CHANGE, gettext("Expired now."))
        self.report(request, selected, len(expired), gettext("Expired"))
        return None

    def confirm(
        self,
        request: HttpRequest,
        queryset: QuerySet[IdempotencyKey],
        eligible: IdempotencyKeyQuerySet,
        *,
        action: str,
        title: str,
        consequence: str,
    ) -> TemplateResponse | None:
        """Ask before an action that makes retries run again, naming the keys it changes."""
        shown = list(eligible.defer("response_headers", "response_body")[:CONFIRM_LISTED])
        if not shown:
            self.report(request, queryset.count(), 0, str(_VERBS[action]))
            return None
        total = eligible.bounded_count()
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "action": action,
            "consequence": consequence,
            "records": shown,
            "total": str(total),
            "total_value": total.value,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/django_idempotency/idempotencykey/action_confirmation.html", context
        )

    def log_deletions(self, request: HttpRequest, queryset: Iterable[IdempotencyKey]) -> None:  # type: ignore[override]
        # Django logs before it deletes; a record that a request changes meanwhile is kept
        # (fenced), so delete_queryset and delete_model log only what they really deleted.
        pass

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]) -> None:
        using = records_database()
        seen = _on(using, queryset).as_seen()
        self.delete_seen(request, using, seen)

    def delete_model(self, request: HttpRequest, obj: IdempotencyKey) -> None:
        self.delete_seen(request, records_database(), [(obj.pk, obj.token, obj.state)])

    def delete_seen(self, request: HttpRequest, using: str, seen: list[Seen]) -> None:
        """Delete the records still exactly as seen, log them and warn about the rest."""
        deleted = IdempotencyKey.objects.using(using).delete_as_seen(seen)
        self.log(request, deleted, DELETION)
        if len(deleted) < len(seen):
            self.warn_changed(request, len(seen) - len(deleted))

    def log(
        self, request: HttpRequest, records: list[IdempotencyKey], flag: int, message: str = ""
    ) -> None:
        """Write the admin's history entries for records an operator changed or deleted."""
        user_id = request.user.pk
        if records and user_id is not None:  # the admin's views require a logged-in user
            LogEntry.objects.log_actions(
                user_id=user_id,
                queryset=records,
                action_flag=flag,
                change_message=message,
            )

    def report(self, request: HttpRequest, selected: int, done: int, verb: str) -> None:
        """Tell the operator how many records an action changed and how many it left alone."""
        self.message_user(
            request,
            ngettext(
                "%(verb)s %(count)d idempotency key.",
                "%(verb)s %(count)d idempotency keys.",
                done,
            )
            % {"verb": verb, "count": done},
            messages.SUCCESS if done else messages.WARNING,
        )
        if selected > done:
            self.message_user(
                request,
                ngettext(
                    "Left %(count)d key alone: it was not eligible or changed meanwhile.",
                    "Left %(count)d keys alone: they were not eligible or changed meanwhile.",
                    selected - done,
                )
                % {"count": selected - done},
                messages.WARNING,
            )

    def warn_changed(self, request: HttpRequest, count: int) -> None:
        """Tell the operator that records changed under them and were kept."""
        self.message_user(
            request,
            ngettext(
                "Kept %(count)d key that a request changed meanwhile.",
                "Kept %(count)d keys that a request changed meanwhile.",
                count,
            )
            % {"count": count},
            messages.WARNING,
        )


#: How many keys a confirmation page names; it says how many it changes in all.
CONFIRM_LISTED = 100
_VERBS = {"release_keys": _("Released"), "expire_keys": _("Expired")}


def _on(using: str, queryset: QuerySet[IdempotencyKey]) -> IdempotencyKeyQuerySet:
    """Return the admin's selection on the database records are written to."""
    # The admin's querysets come from the model's manager, so they have its methods.
    return cast(IdempotencyKeyQuerySet, queryset.using(using))
