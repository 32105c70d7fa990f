"""What identifies a function call: its key, and the fingerprint of its arguments.

``idempotent_function`` and ``idempotent_task`` take the key from the arguments (one of
them by name, or a callable); the fingerprint tells a reuse of the key with other arguments
apart (``CallMismatch``). Arguments are fingerprinted by a typed canonical form: values that
differ in type (``1`` and ``"1"``, a set and its text) never fingerprint alike, and a value
without a canonical form is refused instead of fingerprinted by its ``str()``.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import inspect
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

#: The fingerprint version of a call's arguments (their typed canonical JSON).
CALL_VERSION = "call-2"
#: Leading parameters that are the object a method is called on: never fingerprinted.
_RECEIVERS = frozenset({"self", "cls"})


class CallArguments:
    """How a decorated function's arguments give its call's key and fingerprint."""

    def __init__(
        self,
        function: Callable[..., Any],
        key: str | Callable[..., Any],
        *,
        scope: str | None = None,
        fingerprint: Callable[..., str] | None = None,
    ) -> None:
        if scope is None:
            refuse_a_shared_name(function)
        self.signature = inspect.signature(function)
        if isinstance(key, str) and key not in self.signature.parameters:
            raise TypeError(f"{function.__qualname__} has no argument {key!r} to take keys from")
        self.key = key
        self.fingerprint = fingerprint
        first = next(iter(self.signature.parameters), None)
        #: A method's receiver: another instance in a retry is the same call.
        self.receiver = first if first in _RECEIVERS else None

    def key_and_fingerprint(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        without: frozenset[str] = frozenset(),
    ) -> tuple[Any, str]:
        """Return the call's key and the fingerprint of its arguments but those ``without``."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = self.key
        call_key = bound.arguments[key] if isinstance(key, str) else key(*args, **kwargs)
        if self.fingerprint is not None:
            return call_key, str(self.fingerprint(*args, **kwargs))
        left_out = without | {self.receiver} if self.receiver else without
        fingerprinted = {name: v for name, v in bound.arguments.items() if name not in left_out}
        return call_key, arguments_fingerprint(fingerprinted)


def bound_arguments(
    function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Return the arguments of a call by parameter name, so that ``f(1)`` and ``f(x=1)`` agree.

    A function whose signature cannot be read, or that these arguments do not fit, keeps
    them as given: its call then raises as it would.
    """
    try:
        bound = inspect.signature(function).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return {"args": args, "kwargs": kwargs}
    bound.apply_defaults()
    return dict(bound.arguments)


def arguments_fingerprint(arguments: Any) -> str:
    """Return the fingerprint of a call's arguments: the digest of their typed canonical form."""
    canonical = json.dumps(canonical_form(arguments), separators=(",", ":"))
    return f"{CALL_VERSION}.00000000:{hashlib.sha256(canonical.encode()).hexdigest()}"


def canonical_form(value: Any) -> Any:
    """Return ``value`` as JSON data that tells types apart; ``TypeError`` for other objects.

    Strings, booleans, integers, floats and ``None`` are themselves; lists and tuples are
    lists (Celery and JSON turn one into the other); every other kind is an object of one
    member naming it, so no two kinds meet: a ``dict`` is ``{"dict": [[key, value]...]}``
    sorted, so its keys may be of any kind.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [canonical_form(item) for item in value]
    if isinstance(value, Mapping):
        pairs = [[canonical_form(k), canonical_form(v)] for k, v in value.items()]
        return {"dict": sorted(pairs, key=_sort_key)}
    if isinstance(value, set | frozenset):
        return {"set": sorted((canonical_form(item) for item in value), key=_sort_key)}
    return _tagged(value)


def _tagged(value: Any) -> dict[str, Any]:
    if isinstance(value, enum.Enum):
        return {"enum": [_type_name(value), canonical_form(value.value)]}
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return {type(value).__name__: str(value)}
    if isinstance(value, datetime.date | datetime.time | datetime.timedelta):
        return {type(value).__name__: str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": bytes(value).hex()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return {"dataclass": [_type_name(value), canonical_form(fields)]}
    meta = getattr(value, "_meta", None)
    if meta is not None and hasattr(meta, "label_lower") and hasattr(value, "pk"):
        return {"model": [meta.label_lower, canonical_form(value.pk)]}  # a Django model row
    if callable(getattr(value, "model_dump", None)):  # a pydantic model
        return {"pydantic": [_type_name(value), value.model_dump(mode="json")]}
    raise TypeError(
        f"cannot fingerprint an argument of type {_type_name(value)}: pass fingerprint= (a "
        "callable to the decorator, a string to once()), or pass data (str, numbers, dicts, "
        "lists, dataclasses...)"
    )


def _sort_key(item: Any) -> str:
    return json.dumps(item, separators=(",", ":"))


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def refuse_a_shared_name(function: Callable[..., Any]) -> None:
    """Raise ``TypeError`` unless the function's dotted name, its default scope, is its alone.

    A lambda, a ``functools.partial`` or a nested function shares its name with others (every
    partial is ``functools.partial``; every closure of one ``def`` has one name): a call of
    one would get the result another stored under the same key.
    """
    qualname = getattr(function, "__qualname__", None)
    if not isinstance(qualname, str) or "<" in qualname:
        raise TypeError(
            f"{dotted_name(function)} has no name of its own (a lambda, a partial or a "
            "nested function shares it with others): give it a scope"
        )


def dotted_name(function: Callable[..., Any]) -> str:
    """Return the function's module and qualified name: its records' default scope."""
    qualname = getattr(function, "__qualname__", type(function).__qualname__)
    return f"{getattr(function, '__module__', '')}.{qualname}"
