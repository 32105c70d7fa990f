"""Document ``Idempotency-Key`` in drf-spectacular's OpenAPI schemas, where the app applies it."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any, Protocol, cast

from drf_spectacular.drainage import warn
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.plumbing import ComponentRegistry, ResolvedComponent
from drf_spectacular.utils import OpenApiExample, OpenApiParameter

from django_idempotency import engine
from django_idempotency.conf import idempotency_settings
from django_idempotency.exceptions import IdempotencyError
from django_idempotency.handling import is_handled_by_view
from django_idempotency.keys import MAX_KEY_LENGTH
from django_idempotency.policy import Policy
from django_idempotency.responses import REPLAYED_HEADER

#: Component schema of the RFC 9457 problem documents the middleware and decorator answer with.
PROBLEM_COMPONENT = "IdempotencyProblem"
#: Component schema of DRF's default exception handler's body, for the mixin's errors.
ERROR_DETAIL_COMPONENT = "IdempotencyErrorDetail"

_KEY_CHARACTER = r"[!#-\[\]-~]"  # visible ASCII (0x21-0x7E) but '"' and '\'
_BARE_KEY_CHARACTER = r"[!#-+\--\[\]-~]"  # and no ',': it joins repeated header lines
#: What ``keys.parse_key`` accepts: a bare key, or an RFC 8941 sf-string holding one, 1 to 255
#: visible ASCII characters after unquoting. The length is in the pattern, not in
#: ``maxLength``: a quoted key is longer on the wire than the key it holds.
KEY_PATTERN = (
    rf"^(?:{_BARE_KEY_CHARACTER}{{1,{MAX_KEY_LENGTH}}}"
    rf'|"(?:{_KEY_CHARACTER}|\\["\\]){{1,{MAX_KEY_LENGTH}}}")$'
)
_KEY_EXAMPLE = "8e03978e-40d5-43e8-bc93-6894a57f9324"


class _ViewWithOwnKeys(Protocol):
    """What the schema reads from a view that handles keys itself (``IdempotencyMixin``)."""

    def get_idempotency_options(self) -> dict[str, Any]: ...

    @classmethod
    def idempotency_class_options(cls) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True)
class _Protection:
    """Who protects an operation, and with which policy."""

    policy: Policy


class IdempotencyAutoSchema(AutoSchema):
    """drf-spectacular's ``AutoSchema``, documenting the operations whose keys the app handles."""

    _idempotency: _Protection | None = None

    def get_operation(
        self,
        path: str,
        path_regex: str,
        path_prefix: str,
        method: str,
        registry: ComponentRegistry,
    ) -> dict[str, Any] | None:
        protection = self._find_protection(method.upper(), path_regex)
        # get_override_parameters() reads it while the operation is built, and only then: a
        # schema instance may be shared, and drf-spectacular's callbacks reuse the methods.
        self._idempotency = protection
        try:
            operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        finally:
            self._idempotency = None
        if operation is not None and protection is not None:
            operation["responses"] = self._document_responses(operation["responses"], protection)
        return operation

    def get_override_parameters(self) -> list[Any]:
        parameters = super().get_override_parameters()
        if self._idempotency is None:
            return parameters
        # Before the view's own: an ``@extend_schema`` parameter of the same name wins.
        return [_key_parameter(self._idempotency.policy), *parameters]

    def get_idempotency_error_schema(self) -> dict[str, Any]:
        """Return the body schema of an idempotency error rendered by the DRF exception handler."""
        return _component_ref(self.registry, ERROR_DETAIL_COMPONENT, _error_detail_schema())

    def get_idempotency_problem_schema(self) -> dict[str, Any]:
        """Return the ``IdempotencyProblem`` schema of an RFC 9457 problem document."""
        return _component_ref(self.registry, PROBLEM_COMPONENT, _problem_schema())

    def _find_protection(self, method: str, path_regex: str) -> _Protection | None:
        # Only the mixin protects DRF views: the middleware leaves every other DRF view
        # alone (handling.is_handled_by_middleware), so their keys are not documented.
        if not is_handled_by_view(self.view):
            return None
        protection = _Protection(_mixin_policy(cast(_ViewWithOwnKeys, self.view)))
        # DESIGN §3: safe methods are never covered, whatever a policy lists.
        return protection if protection.policy.covers(method) else None

    def _document_responses(
        self, responses: dict[str, Any], protection: _Protection
    ) -> dict[str, Any]:
        # Every response of the view may be a replay (2xx and deterministic 4xx are stored).
        for response in responses.values():
            if "$ref" not in response:
                response.setdefault("headers", {}).setdefault(
                    REPLAYED_HEADER, _replayed_header(protection.policy)
                )
        for status, errors in _errors_by_status(protection.policy).items():
            error_response = self._error_response(errors, protection)
            if status in responses:
                _merge_response(responses[status], error_response)
            else:
                responses[status] = error_response
        return dict(sorted(responses.items()))

    def _error_response(
        self, errors: list[IdempotencyError], protection: _Protection
    ) -> dict[str, Any]:
        schema = self.get_idempotency_error_schema()
        content = {
            media_type: {"schema": schema} for media_type in self.map_renderers("media_type")
        }
        lines = [f"- `{error.default_code}`: {error.title}." for error in errors]
        response: dict[str, Any] = {
            "content": content,
            "description": "\n".join(
                [f"{protection.policy.header} errors with this status:", "", *lines]
            ),
        }
        retried = [error for error in errors if error.retry_after_seconds is not None]
        if retried:
            response["headers"] = {"Retry-After": _retry_after_header(retried, errors)}
        return response


def _mixin_policy(view: _ViewWithOwnKeys) -> Policy:
    """Return the policy the mixin builds for a request to ``view``, hooks included.

    A bad ``IDEMPOTENCY_*`` setting raises ``ImproperlyConfigured`` naming it: a schema that
    guessed which operations take a key would mislead every client that reads it.
    """
    idempotency_settings.validate()
    try:
        return Policy.build(view.get_idempotency_options())
    except Exception as exc:  # a hook that needs a real request; the class still says much
        warn(
            f"{type(view).__qualname__}.get_idempotency_options() failed during schema "
            f"generation ({exc!r}); documenting its idempotency_* class attributes instead."
        )
        return Policy.build(type(view).idempotency_class_options())


def _errors_by_status(policy: Policy) -> dict[str, list[IdempotencyError]]:
    grouped: dict[str, list[IdempotencyError]] = {}
    for error in engine.possible_errors(policy):
        grouped.setdefault(str(error.status_code), []).append(error)
    return grouped


def _merge_response(declared: dict[str, Any], ours: dict[str, Any]) -> None:
    """Add the idempotency errors to a response the view declares with the same status."""
    if "$ref" in declared:
        return
    declared["description"] = "\n\n".join(
        part for part in (declared.get("description"), ours["description"]) if part
    )
    for name, header in ours.get("headers", {}).items():
        declared.setdefault("headers", {}).setdefault(name, header)
    content = declared.setdefault("content", {})
    for media_type, media in ours["content"].items():
        theirs = content.get(media_type)
        if theirs is None or "schema" not in theirs:
            content[media_type] = {**(theirs or {}), **media}
        elif theirs["schema"] != media["schema"]:
            theirs["schema"] = {"oneOf": [theirs["schema"], media["schema"]]}


def _key_parameter(policy: Policy) -> OpenApiParameter:
    if policy.required:
        usage = "Required."
    else:
        usage = "Optional: without it, the request runs as usual and a retry runs again."
    return OpenApiParameter(
        name=policy.header,
        type={"type": "string", "minLength": 1, "pattern": KEY_PATTERN},
        location=OpenApiParameter.HEADER,
        required=policy.required,
        description=(
            f"{usage} A key the client makes for this operation (a random UUID) and sends "
            "unchanged with every retry of the same request. The first request with a key "
            f"runs; a retry gets its stored response, with `{REPLAYED_HEADER}: true`. "
            f"1 to {MAX_KEY_LENGTH} visible ASCII characters, bare or as an RFC 8941 string "
            f"in double quotes. A key is kept for {_duration(policy.ttl)} after its "
            "response is stored."
        ),
        examples=[OpenApiExample("A random UUID", value=_KEY_EXAMPLE)],
    )


def _retry_after_header(
    retried: list[IdempotencyError], errors: list[IdempotencyError]
) -> dict[str, Any]:
    description = "Seconds to wait before sending the same request with the same key again"
    if len(retried) < len(errors):
        description += " (with " + ", ".join(f"`{e.default_code}`" for e in retried) + ")"
    return {
        "description": description + ".",
        "required": len(retried) == len(errors),
        "schema": {"type": "integer", "minimum": 1},
    }


def _replayed_header(policy: Policy) -> dict[str, Any]:
    return {
        "description": f"`true` when this is the stored response to an earlier request with "
        f"the same {policy.header}, sent again instead of running the operation twice.",
        "schema": {"type": "string", "enum": ["true"]},
    }


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    if not seconds.is_integer():
        return f"{seconds:g} seconds"
    # Whole days from two days up; a day reads as the 24 hours the docs publish.
    for unit, size, least in (("day", 86400, 2), ("hour", 3600, 1), ("minute", 60, 1)):
        if seconds % size == 0 and seconds // size >= least:
            count = int(seconds // size)
            return f"{count} {unit}" + ("" if count == 1 else "s")
    return f"{int(seconds)} second" + ("" if seconds == 1 else "s")


def _component_ref(
    registry: ComponentRegistry, name: str, schema: dict[str, Any]
) -> dict[str, Any]:
    component = ResolvedComponent(  # type: ignore[no-untyped-call]
        name=name, type=ResolvedComponent.SCHEMA, schema=schema, object=name
    )
    registry.register_on_missing(component)
    return component.ref


def _problem_schema() -> dict[str, Any]:
    # A new dict each time: postprocessing hooks may change the schema in place.
    return {
        "type": "object",
        "description": "An RFC 9457 problem document. `type`, `title`, `status` and `code` are "
        "stable for each error; `detail` may say more precisely what was wrong.",
        "properties": {
            "type": {
                "type": "string",
                "format": "uri",
                "description": "Identifies the error; links to its documentation.",
            },
            "title": {"type": "string", "description": "A short summary of the error."},
            "status": {"type": "integer", "description": "The HTTP status code."},
            "detail": {"type": "string", "description": "What went wrong with this request."},
            "code": {
                "type": "string",
                "description": "The error's stable code, such as `idempotency_key_in_progress`.",
            },
        },
        "required": ["type", "title", "status", "detail", "code"],
    }


def _error_detail_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "An idempotency error, as Django REST framework's default exception "
        "handler renders it behind IdempotencyMixin.",
        "properties": {
            "detail": {"type": "string", "description": "What went wrong."},
            "code": {
                "type": "string",
                "description": "The error's stable code, such as `idempotency_key_in_progress`.",
            },
        },
        "required": ["detail", "code"],
    }
