"""Request bodies by meaning: one canonical text for every JSON or form encoding of a value.

Two JSON bodies that differ only in key order, whitespace or string escapes have the same
canonical text; numbers are exact decimals (``10.5`` and ``10.50`` are one number, ``1`` and
``1.0`` too, an integer past 2**53 keeps every digit), never floats. A body that is not plain
JSON (duplicate keys, ``NaN``, invalid, too deep) has no canonical text, and is compared by its
bytes (docs/behaviour.md, "What makes two bodies the same").
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

#: The media types whose bodies are read as JSON, beside any ``+json`` suffix.
JSON_TYPES = frozenset({"application/json"})
FORM_TYPE = "application/x-www-form-urlencoded"


class NotCanonical(ValueError):
    """A body that has no canonical text: it is compared by its bytes."""


def canonical_json(body: bytes) -> str:
    """Return the canonical text of a JSON body; ``NotCanonical`` when it has none."""
    value = _parse(body)
    try:
        return _text(value)
    except RecursionError as exc:
        raise NotCanonical(str(exc)) from exc


def _parse(body: bytes) -> Any:
    try:
        return json.loads(
            body,
            parse_float=Decimal,
            parse_int=Decimal,
            parse_constant=_refuse_constant,
            object_pairs_hook=_object,
        )
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise NotCanonical(str(exc)) from exc


def canonical_form(body: bytes, charset: str = "utf-8") -> str:
    """Return the canonical text of a urlencoded form: its fields, sorted; else ``NotCanonical``."""
    try:
        pairs = parse_qsl(body.decode(charset), keep_blank_values=True, strict_parsing=bool(body))
    except (ValueError, LookupError, UnicodeDecodeError) as exc:
        raise NotCanonical(str(exc)) from exc
    return json.dumps(sorted(pairs), ensure_ascii=True, separators=(",", ":"))


def is_json(media_type: str) -> bool:
    return media_type in JSON_TYPES or media_type.endswith("+json")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        # Parsers disagree on which duplicate wins: the bytes decide, not a guess.
        raise ValueError("duplicate object keys")
    return value


def _text(value: Any) -> str:
    if isinstance(value, dict):
        items = (f"{json.dumps(name)}:{_text(value[name])}" for name in sorted(value))
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_text(item) for item in value) + "]"
    if isinstance(value, Decimal):
        return _number(value)
    # str, True, False, None: json.dumps writes each one way (ASCII escapes for strings).
    return json.dumps(value)


def _number(number: Decimal) -> str:
    """Return an exact decimal as ``<digits>e<exponent>``, trailing zeros and -0 folded.

    Built from the digits, not ``normalize()``, which rounds to the context's precision.
    """
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # JSON has no NaN or infinities; they were refused
    text = "".join(map(str, digits)).lstrip("0")
    if not text:
        return "0"
    stripped = text.rstrip("0")
    exponent += len(text) - len(stripped)
    return f"{'-' if sign else ''}{stripped}e{exponent}"


#: What a field path looks like: keys and indexes between dots, ``*`` for every item.
_SEGMENT = re.compile(r"[^.\s]+")


def is_field_path(path: object) -> bool:
    """Whether ``path`` names a place in a JSON body: ``amount``, ``user.id``, ``lines.*.id``."""
    return (
        isinstance(path, str)
        and bool(path)
        and all(_SEGMENT.fullmatch(segment) for segment in path.split("."))
    )


def canonical_fields(body: bytes, paths: tuple[str, ...]) -> str:
    """Return the canonical text of the named fields of a JSON body; else ``NotCanonical``.

    A field the body does not have counts as absent, which differs from any value, so a
    retry that drops a named field is another request.
    """
    value = _parse(body)
    try:
        return "[" + ",".join(_at(value, path.split(".")) for path in paths) + "]"
    except RecursionError as exc:
        raise NotCanonical(str(exc)) from exc


def _at(value: Any, segments: list[str]) -> str:
    if not segments:
        return _text(value)
    head, rest = segments[0], segments[1:]
    if head == "*" and isinstance(value, list):
        return "[" + ",".join(_at(item, rest) for item in value) + "]"
    if isinstance(value, dict) and head in value:
        return _at(value[head], rest)
    if isinstance(value, list) and head.isdigit() and int(head) < len(value):
        return _at(value[int(head)], rest)
    return "absent"
