"""The operators' view of idempotency keys: find, inspect, release, expire and delete them."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, DELETION, LogEntry
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ImproperlyConfigured
from django.core.paginator import Paginator
from django.db import connections, router, transaction
from django.db.models import Max, Min, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import parse_header_parameters
from django.utils.safestring import SafeString
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from django_idempotency.clock import database_now
from django_idempotency.conf import idempotency_settings
from django_idempotency.models import IdempotencyKey, IdempotencyKeyQuerySet

#: Response headers never shown, whatever a view stored (credentials and session state).
SENSITIVE_HEADERS = frozenset(
    {
        "set-cookie",
        "cookie",
        "authorization",
        "proxy-authorization",
        "www-authenticate",
        "proxy-authenticate",
    }
)
#: Header names that look like they carry a credential are hidden too.
SENSITIVE_HEADER_PATTERN = re.compile(r"auth|cookie|token|secret|api-?key|session", re.IGNORECASE)

#: Characters of a stored body shown on the detail page.
PREVIEW_LIMIT = 10_000

#: Fenced writes are sent in statements of at most this many records.
_FENCE_CHUNK = 500
#: The fields a log entry's description (``str(record)``) reads.
_LOGGED = ("pk", "scope", "key")

_TEXT_TYPES = frozenset(
    {
        "application/javascript",
        "application/x-www-form-urlencoded",
        "application/xml",
        "application/yaml",
        "application/x-yaml",
    }
)


def is_sensitive_header(name: str) -> bool:
    """Return whether a header must never be shown to operators."""
    return name.lower() in SENSITIVE_HEADERS or bool(SENSITIVE_HEADER_PATTERN.search(name))


def content_type_of(headers: Iterable[Sequence[str]]) -> str:
    """Return the stored Content-Type header value, or an empty string."""
    for name, value in headers:
        if str(name).lower() == "content-type":
            return str(value)
    return ""


def preview_body(body: bytes, content_type: str, limit: int = PREVIEW_LIMIT) -> SafeString:
    """Render a stored body as escaped text or pretty JSON, truncated; binary as size and type."""
    if not body:
        return format_html("<em>{}</em>", gettext("empty"))
    media_type, params = parse_header_parameters(content_type) if content_type else ("", {})
    text = _decode(body, media_type, params.get("charset") or "utf-8")
    if text is None:
        return format_html(
            "<em>{}</em>",
            gettext("binary, %(size)s bytes, %(type)s")
            % {"size": len(body), "type": media_type or gettext("unknown type")},
        )
    if media_type == "application/json" or media_type.endswith("+json"):
        # A body that is not valid JSON (or nests too deep) is shown as it is.
        with contextlib.suppress(ValueError, RecursionError):
            text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    note = ""
    if len(text) > limit:
        note = gettext("Truncated: the first %(shown)s of %(total)s characters.") % {
            "shown": limit,
            "total": len(text),
        }
        text = text[:limit]
    return format_html(
        '<pre class="idempotency-preview" style="white-space: pre-wrap; max-height: 40em; '
        'overflow: auto">{}</pre>{}',
        text,
        format_html("<p><em>{}</em></p>", note) if note else "",
    )


def _decode(body: bytes, media_type: str, charset: str) -> str | None:
    """Return the body as text when it is text, or None when it is binary."""
    declared_text = (
        media_type.startswith("text/")
        or media_type in _TEXT_TYPES
        or media_type in {"application/json", ""}
        or media_type.endswith(("+json", "+xml"))
    )
    if not declared_text:
        return None
    try:
        text = body.decode(charset, errors="strict" if media_type == "" else "replace")
    except (LookupError, UnicodeDecodeError):
        return None
    if media_type == "" and any(ord(c) < 32 and c not in "\t\r\n" for c in text):
        return None
    return text


def fenced(using: str, seen: Sequence[tuple[int, str, str]]) -> Iterator[QuerySet[IdempotencyKey]]:
    """Yield the records still exactly as seen (same token, same state), a chunk at a time."""
    records = IdempotencyKey.objects.using(using)
    for start in range(0, len(seen), _FENCE_CHUNK):
        fence = Q()
        for pk, token, state in seen[start : start + _FENCE_CHUNK]:
            fence |= Q(pk=pk, token=token, state=state)
        yield records.filter(fence)


def fenced_write(
    using: str,
    seen: Sequence[tuple[int, str, str]],
    write: Callable[[QuerySet[IdempotencyKey]], object],
    changed: Callable[[QuerySet[IdempotencyKey], set[int]], set[int]],
) -> list[IdempotencyKey]:
    """Apply ``write`` to the records still exactly as seen; return the records it changed.

    Each chunk is locked (``SELECT … FOR UPDATE``) before it is written, so a request that
    completes or re-claims a record at that moment either changes it first, and the fence then
    leaves it alone, or waits for the operator's write. ``changed(records, locked_pks)`` reads
    back which of the locked records the write changed, so what is reported and logged is what
    happened, also where rows cannot be locked (SQLite).
    """
    done: list[IdempotencyKey] = []
    records = IdempotencyKey.objects.using(using)
    with transaction.atomic(using=using):
        for chunk in fenced(using, seen):
            locked = {record.pk: record for record in chunk.select_for_update().only(*_LOGGED)}
            if not locked:
                continue
            write(chunk.filter(pk__in=list(locked)))
            hits = changed(records.filter(pk__in=list(locked)), set(locked))
            done.extend(record for pk, record in locked.items() if pk in hits)
    return done


def deleted_pks(records: QuerySet[IdempotencyKey], locked: set[int]) -> set[int]:
    """The locked records that no longer exist."""
    return locked - set(records.values_list("pk", flat=True))


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]
    """Count at most ``count_limit`` rows; estimate an unfiltered PostgreSQL table instead."""

    count_limit = 10_000

    @cached_property
    def count(self) -> int:
        queryset: QuerySet[IdempotencyKey] = self.object_list  # type: ignore[assignment]
        if not queryset.query.where and connections[queryset.db].vendor == "postgresql":
            estimate = estimated_row_count(queryset.db)
            if estimate > self.count_limit:
                return estimate
        # COUNT(*) over a LIMIT subquery: a filter matching millions stops counting early.
        return queryset.order_by()[: self.count_limit].count()


def estimated_row_count(using: str) -> int:
    """Return PostgreSQL's planner estimate of the table's rows (-1 when never analyzed)."""
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [connection.ops.quote_name(IdempotencyKey._meta.db_table)],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else -1


class DateRangeQuerySet(IdempotencyKeyQuerySet):
    """Answer the date hierarchy from the first and last record, never a DISTINCT scan."""

    def datetimes(  # type: ignore[override]
        self, field_name: str, kind: str, order: str = "ASC", tzinfo: Any = None
    ) -> list[datetime]:
        bounds = self.aggregate(first=Min(field_name), last=Max(field_name))
        if bounds["first"] is None:
            return []
        first, last = timezone.localtime(bounds["first"]), timezone.localtime(bounds["last"])
        # Every period between the two is offered; an empty one simply lists nothing.
        if kind == "year":
            return [datetime(year, 1, 1) for year in range(first.year, last.year + 1)]
        if kind == "month":
            months = range(first.year * 12 + first.month - 1, last.year * 12 + last.month)
            return [datetime(m // 12, m % 12 + 1, 1) for m in months]
        days = (last.date() - first.date()).days + 1
        start = datetime(first.year, first.month, first.day)
        return [start + timedelta(days=n) for n in range(days)]


class IdempotencyKeyChangeList(ChangeList):
    """Leave the stored responses out of the list's query; sort by indexed columns only."""

    def get_ordering_field(self, field_name: Any) -> str | None:
        # Django accepts ?o= for any column; an unindexed sort would scan millions of rows.
        if field_name not in (self.sortable_by or ()):
            return None
        return cast("str | None", super().get_ordering_field(field_name))

    def get_queryset(
        self, request: HttpRequest, exclude_parameters: list[str | None] | None = None
    ) -> QuerySet[IdempotencyKey]:
        queryset: QuerySet[IdempotencyKey] = super().get_queryset(request, exclude_parameters)
        listed = queryset.defer("response_headers", "response_body")
        return DateRangeQuerySet(model=IdempotencyKey, query=listed.query, using=listed.db)


class StateFilter(admin.SimpleListFilter):
    """Filter by state, where "expired" is any record past its expiry."""

    title = _("state")
    parameter_name = "state"
    EXPIRED = "expired"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            *((value, str(label)) for value, label in IdempotencyKey.State.choices),
            (self.EXPIRED, str(_("expired"))),
        ]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]
    ) -> QuerySet[IdempotencyKey]:
        value = self.value()
        now = database_now(queryset.db)
        if value == self.EXPIRED:
            return queryset.filter(expires_at__lte=now)
        if value in IdempotencyKey.State.values:
            return queryset.filter(state=value, expires_at__gt=now)
        return queryset


class StatusClassFilter(admin.SimpleListFilter):
    """Filter by the stored response's status class."""

    title = _("response status")
    parameter_name = "status_class"
    NONE = "none"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            *((f"{digit}xx", f"{digit}xx") for digit in range(1, 6)),
            (self.NONE, str(_("no response"))),
        ]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]
    ) -> QuerySet[IdempotencyKey]:
        value = self.value()
        if value == self.NONE:
            return queryset.filter(response_status__isnull=True)
        if value and re.fullmatch(r"[1-5]xx", value):
            low = int(value[0]) * 100
            return queryset.filter(response_status__gte=low, response_status__lt=low + 100)
        return queryset


class MethodFilter(admin.SimpleListFilter):
    """Filter by HTTP method from a fixed list (never a DISTINCT over the whole table)."""

    title = _("method")
    parameter_name = "method"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        methods = {"POST", "PUT", "PATCH", "DELETE"}
        with contextlib.suppress(ImproperlyConfigured):  # a bad setting breaks no admin page
            methods |= idempotency_settings.METHODS
        return [(method, method) for method in sorted(methods)]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]
    ) -> QuerySet[IdempotencyKey]:
        value = self.value()
        return queryset.filter(method=value.upper()) if value else queryset


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

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        actions = []
        if super().has_change_permission(request):
            actions = [
                ("release_keys", gettext("Release")),
                ("expire_keys", gettext("Expire now")),
            ]
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
        headers = [(str(name), str(value)) for name, value in obj.response_headers]
        shown = [(name, value) for name, value in headers if not is_sensitive_header(name)]
        hidden = len(headers) - len(shown)
        lines = format_html_join("\n", "{}: {}", shown)
        note = ""
        if hidden:
            note = ngettext(
                "%(count)d sensitive header hidden.", "%(count)d sensitive headers hidden.", hidden
            ) % {"count": hidden}
        if not shown and not note:
            return format_html("<em>{}</em>", gettext("none"))
        return format_html(
            "<pre>{}</pre>{}", lines, format_html("<p><em>{}</em></p>", note) if note else ""
        )

    @admin.display(description=_("response body"))
    def response_body_preview(self, obj: IdempotencyKey) -> SafeString:
        body = bytes(obj.response_body)
        return preview_body(body, content_type_of(obj.response_headers))

    @admin.action(permissions=["change"], description=_("Release selected stuck in-flight keys"))
    def release_keys(self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]) -> None:
        using = self.write_database()
        selected = queryset.count()
        seen = list(
            queryset.using(using)
            .filter(state=IdempotencyKey.State.IN_FLIGHT)
            .values_list("pk", "token", "state")
        )
        released = fenced_write(using, seen, QuerySet.delete, deleted_pks)
        self.log(request, released, DELETION, gettext("Released a stuck in-flight key."))
        self.report(request, selected, len(released), gettext("Released"))

    @admin.action(permissions=["change"], description=_("Expire selected keys now"))
    def expire_keys(self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]) -> None:
        using = self.write_database()
        selected = queryset.count()
        now = database_now(using)
        seen = list(
            queryset.using(using).filter(expires_at__gt=now).values_list("pk", "token", "state")
        )
        # A completion re-checks expires_at > now, so an expired lease cannot complete.
        expired = fenced_write(
            using,
            seen,
            lambda records: records.filter(expires_at__gt=now).update(expires_at=now),
            lambda records, _locked: set(
                records.filter(expires_at=now).values_list("pk", flat=True)
            ),
        )
        self.log(request, expired, CHANGE, gettext("Expired now."))
        self.report(request, selected, len(expired), gettext("Expired"))

    def log_deletions(self, request: HttpRequest, queryset: Iterable[IdempotencyKey]) -> None:  # type: ignore[override]
        # Django logs before it deletes; a record that a request changes meanwhile is kept
        # (fenced), so delete_queryset and delete_model log only what they really deleted.
        pass

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]) -> None:
        using = self.write_database()
        seen = list(queryset.using(using).values_list("pk", "token", "state"))
        self.delete_seen(request, using, seen)

    def delete_model(self, request: HttpRequest, obj: IdempotencyKey) -> None:
        using = self.write_database()
        self.delete_seen(request, using, [(obj.pk, obj.token, obj.state)])

    def delete_seen(
        self, request: HttpRequest, using: str, seen: list[tuple[int, str, str]]
    ) -> None:
        """Delete the records still exactly as seen, log them and warn about the rest."""
        deleted = fenced_write(using, seen, QuerySet.delete, deleted_pks)
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

    def write_database(self) -> str:
        """Return the database the storage writes records to."""
        return idempotency_settings.DATABASE or router.db_for_write(IdempotencyKey)

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
