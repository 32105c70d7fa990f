"""How an idempotent function's result is stored: serializers to bytes and back.

A call's result is stored as bytes and every call, the first too, returns it deserialized
(docs/functions.md, "Results"). ``JSONSerializer`` is the default; the others keep
dataclasses, DRF serializers' representations and pydantic models.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
import typing
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from django.core.serializers.json import DjangoJSONEncoder


class Serializer(Protocol):
    """How a result is stored: ``dumps`` to bytes, ``loads`` back."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


def to_json(value: Any) -> bytes:
    """Return compact JSON; ``Decimal``, dates, times and UUIDs as text (DjangoJSONEncoder)."""
    return json.dumps(value, cls=DjangoJSONEncoder, separators=(",", ":")).encode()


class JSONSerializer:
    """Results as JSON: dicts, lists, strings, numbers; ``Decimal``, dates and UUIDs as text."""

    def dumps(self, value: Any) -> bytes:
        return to_json(value)

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


#: The field types a dataclass gets back from their JSON text, by their own constructors.
_FROM_TEXT: dict[Any, Callable[[Any], Any]] = {
    decimal.Decimal: decimal.Decimal,
    uuid.UUID: uuid.UUID,
    datetime.datetime: datetime.datetime.fromisoformat,
    datetime.date: datetime.date.fromisoformat,
    datetime.time: datetime.time.fromisoformat,
}


class DataclassSerializer:
    """Results that are instances of one dataclass, returned as instances of it.

    Fields are stored as JSON; a field annotated ``Decimal``, ``UUID``, ``datetime``,
    ``date``, ``time`` or another dataclass (or ``X | None``, ``list[X]``, ``tuple[X, ...]``,
    ``set[X]`` or ``dict[K, X]`` of them) is rebuilt as that type, exactly.
    """

    def __init__(self, cls: type[Any]) -> None:
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"DataclassSerializer takes a dataclass, not {cls!r}")
        self.cls = cls

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, self.cls):
            raise TypeError(f"expected a {self.cls.__qualname__}, got {type(value).__qualname__}")
        return json.dumps(
            dataclasses.asdict(value), cls=_ExactEncoder, separators=(",", ":")
        ).encode()

    def loads(self, data: bytes) -> Any:
        return _rebuild(self.cls, json.loads(data))


def _rebuild(cls: type[Any], fields: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        if field.name in fields:
            values[field.name] = _as(hints.get(field.name), fields[field.name])
    return cls(**values)


class _ExactEncoder(json.JSONEncoder):
    """Dataclass fields as text that rebuilds them exactly (microseconds kept)."""

    def default(self, o: Any) -> Any:
        if isinstance(o, datetime.date | datetime.time):
            return o.isoformat()
        if isinstance(o, decimal.Decimal | uuid.UUID):
            return str(o)
        return super().default(o)


def _as(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        if origin is tuple and not (len(arguments) == 2 and arguments[1] is Ellipsis):
            items = [
                _as(item_hint, item) for item_hint, item in zip(arguments, value, strict=False)
            ]
        else:
            items = [_as(arguments[0] if arguments else None, item) for item in value]
        return items if origin is list else origin(items)
    if origin is dict and isinstance(value, dict) and len(arguments) == 2:
        return {_as(arguments[0], k): _as(arguments[1], v) for k, v in value.items()}
    options = [hint, *(arguments if _is_union(hint) else ())]
    for option in options:
        if option in _FROM_TEXT and isinstance(value, str):
            return _FROM_TEXT[option](value)
        is_dataclass = isinstance(option, type) and dataclasses.is_dataclass(option)
        if is_dataclass and isinstance(value, dict):
            return _rebuild(option, value)
    return value


def _is_union(hint: Any) -> bool:
    import types

    return typing.get_origin(hint) in (typing.Union, types.UnionType)


class DRFSerializer:
    """Results turned into a DRF serializer's representation; every call returns that dict.

    ``DRFSerializer(PaymentSerializer)``: the function may return a model instance (or
    anything the serializer reads); what is stored, and returned, is
    ``PaymentSerializer(result).data`` as JSON. A ``many=True`` serializer takes lists.
    """

    def __init__(self, serializer_class: type[Any], *, many: bool = False) -> None:
        self.serializer_class = serializer_class
        self.many = many

    def dumps(self, value: Any) -> bytes:
        return to_json(self.serializer_class(value, many=self.many).data)

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class PydanticSerializer:
    """Results that are instances of one pydantic (v2) model, returned as instances of it."""

    def __init__(self, model: type[Any]) -> None:
        if not hasattr(model, "model_validate_json"):
            raise TypeError(f"PydanticSerializer takes a pydantic v2 model, not {model!r}")
        self.model = model

    def dumps(self, value: Any) -> bytes:
        if not isinstance(value, self.model):
            raise TypeError(f"expected a {self.model.__qualname__}, got {type(value).__qualname__}")
        return value.model_dump_json().encode()  # type: ignore[no-any-return]

    def loads(self, data: bytes) -> Any:
        return self.model.model_validate_json(data)
