"""Every option once: its default, what a valid setting or per-view value is, what it becomes.

Each row of ``OPTIONS`` is one option. Its setting is ``IDEMPOTENCY_<NAME>``, its
``@idempotent`` keyword ``<name>`` and its mixin attribute ``idempotency_<name>``. The
settings' defaults (``conf``), the system check E001 and the check of unknown settings
(``checks``), the refusal of a bad per-view value (``@idempotent``, the mixin) and the
policy's fields (``policy``) are all read from this table, so adding an option is one row
here, a field of ``policy.Policy`` and an attribute of ``mixins.IdempotencyMixin``.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any, Literal, cast

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from django_idempotency.encryption import build_encryptor
from django_idempotency.fingerprints import is_field_list, resolve_fingerprint
from django_idempotency.validation import (
    CALLABLE_OR_PATH,
    DURATION,
    IMPORTABLE_CALLABLE,
    METHOD_LIST,
    Validator,
    did_you_mean,
    is_bool,
    is_callable_or_dotted_path,
    is_database_alias,
    is_duration,
    is_importable_callable,
    is_method_list,
    is_setting_storage_path,
    is_storage_option,
    is_str_collection,
)

OnConflict = Literal["reject", "wait"]
#: How keyed requests without a principal are scoped (docs/behaviour.md, "Security model").
AnonymousMode = Literal["session", "refuse", "shared"]

#: Headers a replay carries by default (DESIGN §3); settings and views may add more.
DEFAULT_REPLAY_HEADERS = frozenset(
    {
        "content-type",
        "content-encoding",
        "content-language",
        "vary",
        "location",
        "etag",
        "last-modified",
        "link",
    }
)

#: Headers that are never stored or replayed, whatever a view or setting adds.
NEVER_REPLAYED_HEADERS = frozenset(
    {
        "set-cookie",
        "authorization",
        "www-authenticate",
        "proxy-authenticate",
        "proxy-authorization",
        "date",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
        "content-length",
        "idempotent-replayed",
    }
)


def to_timedelta(value: timedelta | int | float) -> timedelta:
    """Return ``value`` as a timedelta; plain numbers are seconds."""
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=value)


def resolve_callable(value: str | Callable[..., str]) -> Callable[..., str]:
    """Import a dotted path, or return a callable as it is."""
    if isinstance(value, str):
        return cast("Callable[..., str]", import_string(value))
    return value


def upper_methods(methods: Iterable[str]) -> frozenset[str]:
    return frozenset(method.upper() for method in methods)


def replay_headers(names: Iterable[str]) -> frozenset[str]:
    """Return the headers a replay carries: the defaults and ``names``, lower-cased."""
    return DEFAULT_REPLAY_HEADERS | frozenset(name.lower() for name in names)


def _unchanged(value: Any) -> Any:
    return value


def _replaces(_setting: Any, view: Any) -> Any:
    return view


_BOOL: Validator = (is_bool, "a bool")
_DURATION: Validator = (is_duration, DURATION)


@dataclasses.dataclass(frozen=True)
class Option:
    """One option: its default, what a valid setting and per-view value is, what it becomes.

    ``view`` is None for an option a view cannot override (a setting only). ``convert``
    turns a valid value into what the policy holds; ``combine`` joins a view's converted
    value with the setting's (by default the view's replaces it). A ``secret`` setting's
    value is never repeated in a message about it.
    """

    default: Any
    setting: Validator
    view: Validator | None
    convert: Callable[[Any], Any] = _unchanged
    combine: Callable[[Any, Any], Any] = _replaces
    secret: bool = False

    @classmethod
    def both(
        cls,
        default: Any,
        validator: Validator,
        convert: Callable[[Any], Any] = _unchanged,
        combine: Callable[[Any, Any], Any] = _replaces,
    ) -> Option:
        """An option valid alike as a setting and as a per-view override."""
        return cls(default, validator, validator, convert, combine)


def _duration(default: timedelta) -> Option:
    return Option.both(default, _DURATION, to_timedelta)


def _flag(default: bool) -> Option:
    return Option.both(default, _BOOL, bool)


#: Every option, by its lower-case name. The storage stays what it was given (a dotted path
#: or an instance) until the policy asks ``storage.registry`` for it, so a view that brings
#: its own storage never instantiates the setting's.
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
    "methods": Option.both(("POST", "PATCH"), (is_method_list, METHOD_LIST), upper_methods),
    "required": _flag(False),
    "ttl": _duration(timedelta(hours=24)),
    "lease": _duration(timedelta(seconds=60)),
    "on_conflict": Option.both("reject", (lambda v: v in ("reject", "wait"), '"reject" or "wait"')),
    "wait_timeout": _duration(timedelta(seconds=5)),
    "retry_after": _duration(timedelta(seconds=1)),
    "mismatch_status": Option.both(422, (lambda v: v in (400, 409, 422), "400, 409 or 422"), int),
    # A view's headers add to the setting's: both always carry the defaults.
    "replay_headers": Option.both(
        (), (is_str_collection, "a list of header names"), replay_headers, operator.or_
    ),
    "max_response_size": Option.both(
        1024 * 1024,
        (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
            "a number of bytes (int >= 0)",
        ),
        int,
    ),
    "atomic": _flag(True),
    "store_server_errors": _flag(True),
    "fail_open": _flag(False),
    "anonymous": Option.both(
        "session",
        (lambda v: v in ("session", "refuse", "shared"), '"session", "refuse" or "shared"'),
    ),
    "scope": Option(
        "django_idempotency.scopes.default_scope",
        (is_importable_callable, IMPORTABLE_CALLABLE),
        (is_callable_or_dotted_path, CALLABLE_OR_PATH),
        resolve_callable,
    ),
    # Or the JSON body fields that identify the operation (fingerprints.SelectedFields).
    "fingerprint": Option(
        "django_idempotency.fingerprints.default_fingerprint",
        (
            lambda v: is_field_list(v) or is_importable_callable(v),
            f"{IMPORTABLE_CALLABLE}, or a list of JSON field paths",
        ),
        (
            lambda v: is_field_list(v) or is_callable_or_dotted_path(v),
            f"{CALLABLE_OR_PATH}, or a list of JSON field paths",
        ),
        resolve_fingerprint,
    ),
    # The layer switched off, for tests of views that should not care (checked: E008).
    "disabled": Option(False, _BOOL, None),
    # Read once, when the app is ready: it connects the metrics' receivers (docs/metrics.md).
    "metrics": Option(False, _BOOL, None),
    # Read once, when the app is ready: spans of the store calls (docs/observability.md).
    "tracing": Option(False, _BOOL, None),
    # Stored bodies sealed by an encryptor, built once until a setting changes
    # (docs/data-protection.md).
    "encryptor": Option(
        None,
        (lambda v: v is None or is_importable_callable(v), f"None or {IMPORTABLE_CALLABLE}"),
        None,
        build_encryptor,
    ),
    "encryption_keys": Option(
        (),
        (
            lambda v: (
                isinstance(v, list | tuple)
                and all(isinstance(key, str | bytes) and key for key in v)
            ),
            "a list of non-empty keys (str or bytes)",
        ),
        None,
        tuple,
        secret=True,
    ),
    "admin_show_bodies": Option(True, _BOOL, None),
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
#: Their names, in the table's order.
VIEW_OPTION_NAMES: tuple[str, ...] = tuple(OPTION_VALIDATORS)


#: The settings whose values are never repeated in a message (keys, passwords).
SECRET_SETTINGS: frozenset[str] = frozenset(
    setting_name(name) for name, option in OPTIONS.items() if option.secret
)


def setting_problem(name: str, value: Any) -> str | None:
    """Return why ``value`` is not valid for the setting ``name``, or None when it is."""
    is_valid, expected = SETTING_VALIDATORS[name]
    if is_valid(value):
        return None
    if name in SECRET_SETTINGS:
        return f"{name} is a {type(value).__name__}, which is not {expected}"
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
