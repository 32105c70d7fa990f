"""Every option once: its setting's default, and what a valid setting or per-view value is."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
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


def is_setting_storage_path(value: Any) -> bool:
    # Whether it imports is E002's to report (checks.check_storage), and a request's to refuse.
    return isinstance(value, str) and "." in value


def is_storage_option(value: Any) -> bool:
    return is_setting_storage_path(value) or hasattr(value, "claim")


def is_database_alias(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value in settings.DATABASES)


DURATION = "a positive timedelta (or seconds)"
CALLABLE_OR_PATH = "a callable or the dotted path of one"
IMPORTABLE_CALLABLE = "a callable or the importable dotted path of one"
METHOD_LIST = "a non-empty list of unsafe HTTP methods (never GET, HEAD, OPTIONS or TRACE)"

_BOOL: Validator = (_is_bool, "a bool")
_DURATION: Validator = (is_duration, DURATION)


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its ``IDEMPOTENCY_<NAME>`` setting's default and validity, and a view's.

    ``view`` is None for an option a view cannot override (a setting only).
    """

    default: Any
    setting: Validator
    view: Validator | None

    @classmethod
    def both(cls, default: Any, validator: Validator) -> Option:
        """An option valid alike as a setting and as a per-view override."""
        return cls(default, validator, validator)


#: Every option, by its lower-case name: the setting is ``IDEMPOTENCY_<NAME>``, the
#: ``@idempotent`` keyword ``<name>``, the mixin attribute ``idempotency_<name>``.
OPTIONS: dict[str, Option] = {
    "storage": Option(
        "django_idempotency.storage.DatabaseStorage",
        (is_setting_storage_path, "the dotted path of a Storage class"),
        (is_storage_option, "a Storage instance or the dotted path of a Storage class"),
    ),
    "database": Option(None, (is_database_alias, "None or a key of DATABASES"), None),
    "cache_alias": Option(
        "default", (lambda v: isinstance(v, str) and bool(v), "a cache alias (str)"), None
    ),
    "header": Option(
        "Idempotency-Key", (lambda v: isinstance(v, str) and bool(v), "a header name (str)"), None
    ),
    "methods": Option.both(("POST", "PATCH"), (is_method_list, METHOD_LIST)),
    "required": Option.both(False, _BOOL),
    "ttl": Option.both(timedelta(hours=24), _DURATION),
    "lease": Option.both(timedelta(seconds=60), _DURATION),
    "on_conflict": Option.both("reject", (lambda v: v in ("reject", "wait"), '"reject" or "wait"')),
    "wait_timeout": Option.both(timedelta(seconds=5), _DURATION),
    "retry_after": Option.both(timedelta(seconds=1), _DURATION),
    "mismatch_status": Option.both(422, (lambda v: v in (400, 409, 422), "400, 409 or 422")),
    "replay_headers": Option.both((), (is_str_collection, "a list of header names")),
    "max_response_size": Option.both(
        1024 * 1024,
        (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "a number of bytes (int >= 0)",
        ),
    ),
    "atomic": Option.both(True, _BOOL),
    "store_server_errors": Option.both(True, _BOOL),
    "fail_open": Option.both(False, _BOOL),
    "anonymous": Option.both(
        "session",
        (lambda v: v in ("session", "refuse", "shared"), '"session", "refuse" or "shared"'),
    ),
    "scope": Option(
        "django_idempotency.scopes.default_scope",
        (is_importable_callable, IMPORTABLE_CALLABLE),
        (is_callable_or_dotted_path, CALLABLE_OR_PATH),
    ),
    "fingerprint": Option(
        "django_idempotency.fingerprints.default_fingerprint",
        (is_importable_callable, IMPORTABLE_CALLABLE),
        (is_callable_or_dotted_path, CALLABLE_OR_PATH),
    ),
}

SETTING_PREFIX = "IDEMPOTENCY_"


def setting_name(option: str) -> str:
    """Return the setting of ``option``: ``ttl`` is ``IDEMPOTENCY_TTL``."""
    return f"{SETTING_PREFIX}{option.upper()}"


#: Each setting's default, by setting name.
SETTING_DEFAULTS: dict[str, Any] = {
    setting_name(name): option.default for name, option in OPTIONS.items()
}

#: Each setting's validator, by setting name (the checks' E001, and every request).
SETTING_VALIDATORS: dict[str, Validator] = {
    setting_name(name): option.setting for name, option in OPTIONS.items()
}

#: Per-view options (``@idempotent`` keywords, ``idempotency_<name>`` attributes).
OPTION_VALIDATORS: dict[str, Validator] = {
    name: option.view for name, option in OPTIONS.items() if option.view is not None
}


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


def setting_problem(name: str, value: Any) -> str | None:
    """Return why ``value`` is not valid for the setting ``name``, or None when it is."""
    is_valid, expected = SETTING_VALIDATORS[name]
    if is_valid(value):
        return None
    return f"{name} is {value!r}, which is not {expected}"


def invalid_options(options: Mapping[str, Any], *, prefix: str = "") -> list[str]:
    """Return a sentence for each option (``None`` means unset) whose value is not valid.

    ``prefix`` is how the owner spells an option (``idempotency_`` for a mixin attribute).
    """
    problems = []
    for name, value in options.items():
        if value is None:
            continue
        validator = OPTION_VALIDATORS.get(name)
        if validator is None:
            known = [f"{prefix}{option}" for option in OPTION_VALIDATORS]
            problems.append(
                f"{prefix + name!r} is not an idempotency option "
                f"({did_you_mean(prefix + name, known)})"
            )
        elif not validator[0](value):
            problems.append(f"{prefix}{name}={value!r} is not {validator[1]}")
    return problems


def validate_options(options: Mapping[str, Any], *, owner: str, prefix: str = "") -> None:
    """Raise ``ImproperlyConfigured`` naming ``owner`` when an option is unknown or invalid."""
    problems = invalid_options(options, prefix=prefix)
    if problems:
        raise ImproperlyConfigured(f"{owner}: {'; '.join(problems)}.")
