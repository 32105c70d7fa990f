"""The change list's filters: by state and expiry, response status class, and method."""

from __future__ import annotations

import contextlib
import re
from typing import Any, cast

from django.contrib import admin
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from django_idempotency.conf import idempotency_settings
from django_idempotency.models import IdempotencyKey, IdempotencyKeyQuerySet
from django_idempotency.storage.base import CALL_KIND


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
        # The model admin's queryset, so the model's own expiry rules (and clock) apply.
        records = cast(IdempotencyKeyQuerySet, queryset)
        if value == self.EXPIRED:
            return records.expired()
        if value in IdempotencyKey.State.values:
            return records.live().filter(state=value)
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
    """Filter by HTTP method from a fixed list (never a DISTINCT over the whole table).

    Function calls (``functions.idempotent_function``) are one more choice: their records
    keep ``CALL`` where a request's keep its method, and the function's name as the path.
    """

    title = _("method")
    parameter_name = "method"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        methods = {"POST", "PUT", "PATCH", "DELETE"}
        with contextlib.suppress(ImproperlyConfigured):  # a bad setting breaks no admin page
            methods |= idempotency_settings.METHODS
        return [(method, method) for method in sorted(methods)] + [
            (CALL_KIND, gettext("function call"))
        ]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[IdempotencyKey]
    ) -> QuerySet[IdempotencyKey]:
        value = self.value()
        return queryset.filter(method=value.upper()) if value else queryset
