"""What a valid value is for each kind of option, and how a misspelled name is answered."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
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


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def is_setting_storage_path(value: Any) -> bool:
    # Whether it imports is E002's to report (checks.check_storage), and a request's to refuse.
    return isinstance(value, str) and "." in value


def is_storage_option(value: Any) -> bool:
    return is_setting_storage_path(value) or hasattr(value, "claim")


def is_database_alias(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value in settings.DATABASES)


#: What each kind of value must be, as the error messages say it.
DURATION = "a positive timedelta (or seconds)"
CALLABLE_OR_PATH = "a callable or the dotted path of one"
IMPORTABLE_CALLABLE = "a callable or the importable dotted path of one"
METHOD_LIST = "a non-empty list of unsafe HTTP methods (never GET, HEAD, OPTIONS or TRACE)"


def closest_name(name: str, valid: Iterable[str]) -> str | None:
    """Return the valid name ``name`` was most likely meant to be, if any is close."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """Return "did you mean 'x'?" for the closest valid name, or a pointer to the docs."""
    closest = closest_name(name, valid)
    if closest is None:
        return "see docs/settings.md for the valid names"
    return f"did you mean {closest!r}?"
