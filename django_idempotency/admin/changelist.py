"""The change list over millions of records: estimated counts, indexed sorts, no scans, a census."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, cast

from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Max, Min, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext

from django_idempotency.models import COUNT_LIMIT, IdempotencyKey, IdempotencyKeyQuerySet
from django_idempotency.storage.base import Census


class EstimatedCountPaginator(Paginator):  # type: ignore[type-arg]
    """Count at most ``count_limit`` rows; past that, PostgreSQL's estimate or the limit.

    The count is ``IdempotencyKeyQuerySet.bounded_count()``, which the census also uses;
    the change list's summary says when the figure is an estimate.
    """

    count_limit = COUNT_LIMIT

    @cached_property
    def count(self) -> int:
        queryset: IdempotencyKeyQuerySet = self.object_list  # type: ignore[assignment]
        return queryset.bounded_count(self.count_limit).value


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


def census_rows(census: Census) -> list[tuple[str, str]]:
    """Return the change list's summary: a label and a figure per state, then the oldest."""
    rows = [
        (gettext("In flight"), str(census.in_flight)),
        (gettext("Past their lease"), str(census.lease_expired)),
        (gettext("Completed"), str(census.completed)),
        (gettext("Not replayable"), str(census.not_replayable)),
        (gettext("Expired, awaiting purge"), str(census.expired)),
    ]
    if census.oldest_in_flight is not None:
        oldest = timesince(timezone.now() - census.oldest_in_flight)
        rows.append((gettext("Oldest in flight"), oldest))
    return rows
