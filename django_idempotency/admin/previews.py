"""Show a stored response to operators: escaped, truncated, opened, without credentials."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Sequence

from django.core.exceptions import ImproperlyConfigured
from django.utils.html import format_html, format_html_join
from django.utils.http import parse_header_parameters
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext

from django_idempotency.conf import idempotency_settings
from django_idempotency.encryption import Unreadable, is_sealed, unseal

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


def preview_headers(stored: Iterable[Sequence[str]]) -> SafeString:
    """Render stored headers one a line, hiding sensitive ones and saying how many were hidden."""
    headers = [(str(name), str(value)) for name, value in stored]
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


def preview_stored_body(stored: bytes, content_type: str, *, scope: str, key: str) -> SafeString:
    """Render a body as stored: hidden where the settings say so, opened where it is sealed.

    ``IDEMPOTENCY_ADMIN_SHOW_BODIES = False`` shows only its size; a sealed body is opened
    with ``IDEMPOTENCY_ENCRYPTOR``, or said to be unreadable, never shown as ciphertext.
    """
    size = {"size": len(stored)}
    if not idempotency_settings.ADMIN_SHOW_BODIES:
        message = gettext("hidden (IDEMPOTENCY_ADMIN_SHOW_BODIES is False), %(size)s bytes")
        return format_html("<em>{}</em>", message % size)
    try:
        body = unseal(stored, idempotency_settings.ENCRYPTOR, scope=scope, key=key)
    except (Unreadable, ImproperlyConfigured):
        message = gettext("encrypted, %(size)s bytes; IDEMPOTENCY_ENCRYPTOR cannot open it")
        return format_html("<em>{}</em>", message % size)
    preview = preview_body(body, content_type)
    if is_sealed(stored):
        note = gettext("Stored encrypted; shown decrypted.")
        return format_html("{}<p><em>{}</em></p>", preview, note)
    return preview


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
