"""What identifies a function call: its key, and the fingerprint of its arguments.

``idempotent_function`` and ``idempotent_task`` take the key from the arguments (one of
them by name, or a callable); the fingerprint tells a reuse of the key with other arguments
apart (``CallMismatch``).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

#: The fingerprint version of a call's arguments (their JSON, str() for other values).
CALL_VERSION = "call-1"


class CallArguments:
    """How a decorated function's arguments give its call's key and fingerprint."""

    def __init__(self, function: Callable[..., Any], key: str | Callable[..., str]) -> None:
        self.signature = inspect.signature(function)
        if isinstance(key, str) and key not in self.signature.parameters:
            raise TypeError(f"{function.__qualname__} has no argument {key!r} to take keys from")
        self.key = key

    def key_and_fingerprint(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        without: frozenset[str] = frozenset(),
    ) -> tuple[str, str]:
        """Return the call's key and the fingerprint of its arguments but those ``without``."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = self.key
        call_key = str(bound.arguments[key]) if isinstance(key, str) else str(key(*args, **kwargs))
        fingerprinted = {name: v for name, v in bound.arguments.items() if name not in without}
        return call_key, arguments_fingerprint(fingerprinted)


def arguments_fingerprint(arguments: Any) -> str:
    """Return the fingerprint of a call's arguments: their canonical JSON, str() for others."""
    canonical = json.dumps(arguments, cls=DjangoJSONEncoder, sort_keys=True, default=str)
    return f"{CALL_VERSION}.00000000:{hashlib.sha256(canonical.encode()).hexdigest()}"
