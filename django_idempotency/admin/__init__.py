"""The operators' admin of idempotency keys; Django's autodiscovery imports it to register it."""

from __future__ import annotations

from django_idempotency.admin.changelist import (
    DateRangeQuerySet,
    EstimatedCountPaginator,
    IdempotencyKeyChangeList,
    estimated_row_count,
)
from django_idempotency.admin.filters import MethodFilter, StateFilter, StatusClassFilter
from django_idempotency.admin.model_admin import IdempotencyKeyAdmin
from django_idempotency.admin.previews import (
    PREVIEW_LIMIT,
    SENSITIVE_HEADER_PATTERN,
    SENSITIVE_HEADERS,
    content_type_of,
    is_sensitive_header,
    preview_body,
    preview_headers,
)

__all__ = [
    "PREVIEW_LIMIT",
    "SENSITIVE_HEADERS",
    "SENSITIVE_HEADER_PATTERN",
    "DateRangeQuerySet",
    "EstimatedCountPaginator",
    "IdempotencyKeyAdmin",
    "IdempotencyKeyChangeList",
    "MethodFilter",
    "StateFilter",
    "StatusClassFilter",
    "content_type_of",
    "estimated_row_count",
    "is_sensitive_header",
    "preview_body",
    "preview_headers",
]
