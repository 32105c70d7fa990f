"""What a valid setting or per-view option is: one table for the checks and the views."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

# RFC 9110 §9.2.1: safe methods change nothing, so a key on them is ignored (DESIGN §3).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

Validator = tuple[Callable[[Any], bool], str]


def is_duration(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, timedelta):
        return value > timedelta(0)
    return isinstance(value, int | float) and value > 0


def is_str_collection(value: Any) -> bool:
    return isinstance(value, list | tuple | set | frozenset) and all(
        isinstance(item, str) for item in value
    )


def is_method_list(value: Any) -> bool:
    return (
        is_str_collection(value)
        and bool(value)
        and not {method.upper() for method in value} & SAFE_METHODS
    )


def is_callable_or_dotted_path(value: Any) -> bool:
    # Views are checked when they are defined, where importing could be circular; the
    # settings check imports the path (is_importable_callable).
    return callable(value) or (isinstance(value, str) and "." in value)


def is_importable_callable(value: Any) -> bool:
    if callable(value):
        return True
    try:
        return isinstance(value, str) and callable(import_string(value))
    except Exception:  # any failure to import is a bad setting, reported, never raised
        return False


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


DURATION = "a positive timedelta (or seconds)"

#: Per-view options (``@idempotent`` keywords, ``idempotency_<name>`` attributes).
OPTION_VALIDATORS: dict[str, Validator] = {
    "methods": (
        is_method_list,
        "a non-empty list of unsafe HTTP methods (never GET, HEAD, OPTIONS or TRACE)",
    ),
    "required": (_is_bool, "a bool"),
    "ttl": (is_duration, DURATION),
    "lease": (is_duration, DURATION),
    "on_conflict": (lambda v: v in ("reject", "wait"), '"reject" or "wait"'),
    "wait_timeout": (is_duration, DURATION),
    "retry_after": (is_duration, DURATION),
    "mismatch_status": (lambda v: v in (400, 409, 422), "400, 409 or 422"),
    "replay_headers": (is_str_collection, "a list of header names"),
    "max_response_size": (
        lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
        "a number of bytes (int >= 0)",
    ),
    "atomic": (_is_bool, "a bool"),
    "store_server_errors": (_is_bool, "a bool"),
    "fail_open": (_is_bool, "a bool"),
    "anonymous": (
        lambda v: v in ("session", "refuse", "shared"),
        '"session", "refuse" or "shared"',
    ),
    "scope": (is_callable_or_dotted_path, "a callable or the dotted path of one"),
    "fingerprint": (is_callable_or_dotted_path, "a callable or the dotted path of one"),
    "storage": (
        lambda v: (isinstance(v, str) and "." in v) or hasattr(v, "claim"),
        "a Storage instance or the dotted path of a Storage class",
    ),
}


def invalid_options(options: Mapping[str, Any]) -> list[str]:
    """Return a sentence for each option (``None`` means unset) whose value is not valid."""
    problems = []
    for name, value in options.items():
        if value is None:
            continue
        validator = OPTION_VALIDATORS.get(name)
        if validator is None:
            problems.append(f"{name!r} is not an idempotency option")
        elif not validator[0](value):
            problems.append(f"{name}={value!r} is not {validator[1]}")
    return problems


def validate_options(options: Mapping[str, Any], *, owner: str) -> None:
    """Raise ``ImproperlyConfigured`` naming ``owner`` when an option is unknown or invalid."""
    problems = invalid_options(options)
    if problems:
        raise ImproperlyConfigured(f"{owner}: {'; '.join(problems)}.")
