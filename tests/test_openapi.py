"""The OpenAPI schema documents Idempotency-Key where the app handles it (docs/openapi.md)."""

from __future__ import annotations

import ast
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.settings import patched_settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient

from django_idempotency import exceptions
from django_idempotency.contrib.drf_spectacular import KEY_PATTERN, IdempotencyAutoSchema
from django_idempotency.exceptions import IdempotencyError, IdempotencyKeyInvalid
from django_idempotency.keys import parse_key
from django_idempotency.mixins import IdempotencyMixin
from django_idempotency.responses import problem_response
from tests.factories import UserFactory
from tests.testapp import openapi_views

PACKAGE = Path(__file__).resolve().parent.parent / "django_idempotency"
PROBLEM_REF = {"$ref": "#/components/schemas/IdempotencyProblem"}
ERROR_DETAIL_REF = {"$ref": "#/components/schemas/IdempotencyErrorDetail"}
IDEMPOTENCY_ERRORS = {"400", "403", "406", "409", "413", "422", "503"}


@pytest.fixture(autouse=True)
def schema_settings(settings: Any) -> None:
    # What docs/openapi.md tells users to write, on the OpenAPI tests' URLconf.
    settings.ROOT_URLCONF = "tests.testapp.openapi_urls"
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_SCHEMA_CLASS": "django_idempotency.contrib.drf_spectacular.IdempotencyAutoSchema",
    }


def generate(**generator_kwargs: Any) -> dict[str, Any]:
    """Return the schema as ``manage.py spectacular`` and ``SpectacularAPIView`` make it."""
    schema: dict[str, Any] = SchemaGenerator(**generator_kwargs).get_schema(  # type: ignore[no-untyped-call]
        request=None, public=True
    )
    return schema


def key_parameter(operation: dict[str, Any]) -> dict[str, Any] | None:
    matches = [
        parameter
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "header" and parameter["name"] == "Idempotency-Key"
    ]
    assert len(matches) <= 1
    return matches[0] if matches else None


def key_required(operation: dict[str, Any]) -> bool:
    parameter = key_parameter(operation)
    assert parameter is not None, "no Idempotency-Key parameter"
    return bool(parameter.get("required", False))


def codes(response: dict[str, Any]) -> list[str]:
    return re.findall(r"`(idempotency_[a-z_]+)`", response["description"])


def assert_untouched(operation: dict[str, Any]) -> None:
    assert key_parameter(operation) is None
    assert not IDEMPOTENCY_ERRORS & set(operation["responses"])
    for response in operation["responses"].values():
        assert "Idempotent-Replayed" not in response.get("headers", {})


# The Idempotency-Key parameter


def test_key_parameter__required_by_a_mixin_view() -> None:
    operation = generate()["paths"]["/drf/required/"]["post"]

    parameter = key_parameter(operation)

    assert parameter is not None
    assert parameter["required"] is True
    assert parameter["description"].startswith("Required.")
    assert "24 hours" in parameter["description"]  # the expiry policy, published
    assert parameter["schema"] == {"type": "string", "minLength": 1, "pattern": KEY_PATTERN}


def test_key_parameter__optional_when_the_view_does_not_require_it() -> None:
    operation = generate()["paths"]["/drf/behave/"]["post"]

    parameter = key_parameter(operation)

    assert parameter is not None
    assert parameter.get("required", False) is False
    assert parameter["description"].startswith("Optional")


def test_key_parameter__follows_the_views_methods() -> None:
    paths = generate()["paths"]

    # DRFBehaveView adds DELETE; OrderViewSet keeps the default POST and PATCH.
    assert key_parameter(paths["/drf/behave/"]["delete"]) is not None
    assert key_parameter(paths["/api/orders/"]["post"]) is not None
    assert key_parameter(paths["/api/orders/{id}/"]["patch"]) is not None
    assert_untouched(paths["/api/orders/{id}/"]["put"])
    assert_untouched(paths["/api/orders/{id}/"]["delete"])


def test_key_parameter__never_on_safe_methods() -> None:
    paths = generate()["paths"]

    for path_item in paths.values():
        if "get" in path_item:
            assert_untouched(path_item["get"])
    assert "get" in paths["/drf/behave/"]  # a mixin view whose methods cover POST
    assert "get" in paths["/api/orders/{id}/"]


def test_a_bad_setting__is_named_rather_than_guessed_around(settings: Any) -> None:
    settings.IDEMPOTENCY_METHODS = ["POST", "PATCH", "GET"]  # check E001 reports it too

    with pytest.raises(ImproperlyConfigured, match="IDEMPOTENCY_METHODS is"):
        generate()


def test_key_parameter__decided_per_action_by_the_views_hooks() -> None:
    paths = generate()["paths"]

    assert key_required(paths["/api/receipts/"]["post"]) is True
    assert key_required(paths["/api/receipts/{id}/"]["patch"]) is False
    assert key_required(paths["/api/receipts/{id}/"]["put"]) is False


def test_key_parameter__class_attributes_when_a_hook_needs_a_real_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    operation = generate()["paths"]["/organisation/"]["post"]

    assert key_required(operation) is True
    assert "OrganisationView.get_idempotency_options() failed" in capsys.readouterr().err


def test_key_parameter__named_after_the_header_setting(settings: Any) -> None:
    settings.IDEMPOTENCY_HEADER = "X-Request-Key"

    operation = generate()["paths"]["/drf/required/"]["post"]

    assert key_parameter(operation) is None
    assert [p["name"] for p in operation["parameters"] if p["in"] == "header"] == ["X-Request-Key"]


# What a key may be: the documented pattern is parse_key's rule.

header_values = st.one_of(
    st.text(st.characters(max_codepoint=0x80), max_size=260),
    st.from_regex(r'\A"([ -!#-\[\]-~]|\\["\\])*"\Z'),
    st.from_regex(r"\A[!-~]{1,256}\Z"),
)


@hypothesis_settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(header_values)
@example("8e03978e-40d5-43e8-bc93-6894a57f9324")
@example('"8e03978e-40d5-43e8-bc93-6894a57f9324"')
@example('"a\\"b\\\\c"')
@example('"a\\b"')
@example('"a"b"')
@example('""')
@example('"a b"')
@example("a" * 255)
@example("a" * 256)
@example('"' + "\\\\" * 255 + '"')
@example('"' + "a" * 256 + '"')
def test_key_pattern__accepts_what_parse_key_accepts(value: str) -> None:
    if value != value.strip(" \t"):
        return  # header parsers drop surrounding whitespace before any of this

    try:
        parse_key(value)
    except IdempotencyKeyInvalid:
        accepted = False
    else:
        accepted = True

    assert (re.fullmatch(KEY_PATTERN, value) is not None) is accepted


# Error responses


def test_error_responses__every_status_and_code_of_a_mixin_view() -> None:
    operation = generate()["paths"]["/drf/required/"]["post"]
    responses = operation["responses"]

    assert key_required(operation) is True
    assert set(responses) >= IDEMPOTENCY_ERRORS
    assert codes(responses["400"]) == ["idempotency_key_missing", "idempotency_key_invalid"]
    assert codes(responses["403"]) == ["idempotency_key_without_principal"]
    assert codes(responses["409"]) == [
        "idempotency_key_in_progress",
        "idempotency_key_not_replayable",
        "idempotency_lease_expired",
    ]
    assert codes(responses["413"]) == ["idempotency_request_too_large"]
    assert codes(responses["422"]) == [
        "idempotency_key_mismatch",
        "idempotency_fingerprint_unknown",
    ]
    assert codes(responses["503"]) == ["idempotency_store_unavailable"]


def test_error_responses__no_403_where_anonymous_callers_share_a_scope(settings: Any) -> None:
    settings.IDEMPOTENCY_ANONYMOUS = "shared"

    responses = generate()["paths"]["/drf/required/"]["post"]["responses"]

    assert "403" not in responses


def test_error_responses__retry_after_where_a_retry_can_succeed() -> None:
    responses = generate()["paths"]["/drf/required/"]["post"]["responses"]

    assert responses["503"]["headers"]["Retry-After"]["required"] is True
    # Not every 409 carries it: a key whose response was not stored never succeeds.
    assert responses["409"]["headers"]["Retry-After"]["required"] is False
    assert responses["409"]["headers"]["Retry-After"]["schema"] == {
        "type": "integer",
        "minimum": 1,
    }
    for status in ("400", "403", "413", "422"):
        assert "Retry-After" not in responses[status].get("headers", {})


def test_error_responses__the_exception_handlers_format_behind_the_mixin() -> None:
    responses = generate()["paths"]["/drf/required/"]["post"]["responses"]

    for status in IDEMPOTENCY_ERRORS:
        assert responses[status]["content"] == {"application/json": {"schema": ERROR_DETAIL_REF}}


def test_error_responses__only_missing_when_required() -> None:
    paths = generate()["paths"]

    assert codes(paths["/drf/behave/"]["post"]["responses"]["400"]) == ["idempotency_key_invalid"]
    assert "idempotency_key_missing" in codes(paths["/drf/required/"]["post"]["responses"]["400"])


def test_error_responses__follow_the_views_policy() -> None:
    # LenientView: mismatch answered 409, fail-open, no shared transaction.
    responses = generate()["paths"]["/lenient/"]["post"]["responses"]

    assert "422" not in responses
    assert "503" not in responses  # fail-open: the view runs when the store is down
    assert codes(responses["409"]) == [
        "idempotency_key_in_progress",
        "idempotency_key_not_replayable",
        "idempotency_key_mismatch",
        "idempotency_fingerprint_unknown",
    ]  # and no lease_expired: that needs a shared transaction


def test_error_responses__no_413_without_an_upload_limit(settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = None

    responses = generate()["paths"]["/drf/required/"]["post"]["responses"]

    assert "413" not in responses


def test_error_responses__merged_into_the_views_own() -> None:
    # Declared here, not in tests.testapp: @extend_schema reads DEFAULT_SCHEMA_CLASS when it
    # decorates, and a project sets it in its settings, before its views are imported.
    class ValidationErrorSerializer(serializers.Serializer[Any]):
        amount = serializers.ListField(child=serializers.CharField())

    class InvoiceView(IdempotencyMixin, generics.CreateAPIView[Any]):
        serializer_class = openapi_views.InvoiceSerializer
        idempotency_required = True

        @extend_schema(
            responses={
                201: openapi_views.InvoiceSerializer,
                400: OpenApiResponse(ValidationErrorSerializer, description="Invalid invoice."),
            }
        )
        def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
            return super().post(request, *args, **kwargs)

    schema = generate(patterns=[path("invoices/", InvoiceView.as_view())])
    response = schema["paths"]["/invoices/"]["post"]["responses"]["400"]

    assert response["description"].startswith("Invalid invoice.\n\n")
    assert codes(response) == ["idempotency_key_missing", "idempotency_key_invalid"]
    assert response["content"]["application/json"]["schema"] == {
        "oneOf": [{"$ref": "#/components/schemas/ValidationError"}, ERROR_DETAIL_REF]
    }


def test_error_responses__a_schema_class_for_problem_handlers(settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_SCHEMA_CLASS": f"{__name__}.ProblemHandlerSchema",
    }

    responses = generate()["paths"]["/drf/required/"]["post"]["responses"]

    assert responses["409"]["content"] == {"application/json": {"schema": PROBLEM_REF}}


class ProblemHandlerSchema(IdempotencyAutoSchema):
    """For a project whose exception handler renders problem documents (docs/errors.md)."""

    def get_idempotency_error_schema(self) -> dict[str, Any]:
        return self.get_idempotency_problem_schema()


# The Idempotent-Replayed header


def test_replayed_header__on_the_views_responses_only() -> None:
    paths = generate()["paths"]
    created = paths["/api/orders/"]["post"]["responses"]
    deleted = paths["/drf/behave/"]["delete"]["responses"]

    header = created["201"]["headers"]["Idempotent-Replayed"]
    assert header["schema"] == {"type": "string", "enum": ["true"]}
    assert header.get("required", False) is False
    assert "Idempotent-Replayed" in deleted["204"]["headers"]
    for status in IDEMPOTENCY_ERRORS:
        assert "Idempotent-Replayed" not in created[status].get("headers", {})


# The components


def test_problem_component__describes_problem_response(settings: Any) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_SCHEMA_CLASS": f"{__name__}.ProblemHandlerSchema",
    }
    components = generate()["components"]["schemas"]
    body = json.loads(problem_response(exceptions.IdempotencyKeyInProgress()).content)

    problem = components["IdempotencyProblem"]

    assert problem["type"] == "object"
    assert set(problem["required"]) == set(problem["properties"]) == set(body)
    jsonschema.validate(body, problem)


def test_error_detail_component__describes_drfs_default_handler() -> None:
    components = generate()["components"]["schemas"]

    assert components["IdempotencyErrorDetail"]["required"] == ["detail", "code"]


def test_error_codes__every_error_can_be_documented(settings: Any) -> None:
    # Encryption on: a body sealed by a key since dropped is unreadable (503).
    settings.IDEMPOTENCY_ENCRYPTOR = "django_idempotency.encryption.FernetEncryptor"
    settings.IDEMPOTENCY_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    documented = set()
    schema = generate()
    for path_item in schema["paths"].values():
        for operation in path_item.values():
            for status in IDEMPOTENCY_ERRORS & set(operation["responses"]):
                documented.update(codes(operation["responses"][status]))

    assert documented == {cls.default_code for cls in error_classes()}


def error_classes() -> list[type[IdempotencyError]]:
    return [
        value
        for value in vars(exceptions).values()
        if isinstance(value, type)
        and issubclass(value, IdempotencyError)
        and value is not IdempotencyError
    ]


# DRF views without the mixin


def test_drf_views_without_the_mixin__are_not_documented() -> None:
    # The middleware leaves them alone (docs/behaviour.md, "Security model"), decorated or not.
    paths = generate()["paths"]

    for url in ("/drf-without-mixin/behave/", "/invoices/", "/transfers/", "/webhook/"):
        assert_untouched(paths[url]["post"])
    assert_untouched(paths["/drf-without-mixin/exempt/"]["post"])


# The whole schema, and what the wire says


@pytest.mark.parametrize("version", ["3.0.3", "3.1.0"])
def test_schema__valid_openapi(version: str) -> None:
    with patched_settings({"OAS_VERSION": version}):
        schema = generate()

    assert schema["openapi"] == version
    validate_schema(schema)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(
    ("url", "content_type"),
    [("/drf/required/", "application/json")],
)
def test_schema__describes_the_response_sent(url: str, content_type: str) -> None:
    schema = generate()
    documented = schema["paths"][url]["post"]["responses"]["400"]

    response = APIClient().post(url, {"amount": "4.20"}, format="json")

    assert response.status_code == 400
    assert response["Content-Type"] == content_type
    body_schema = documented["content"][content_type]["schema"]
    jsonschema.validate(response.json(), {**body_schema, "components": schema["components"]})


@pytest.mark.django_db
def test_schema__describes_the_replay_sent() -> None:
    documented = generate()["paths"]["/api/orders/"]["post"]["responses"]["201"]
    client = APIClient()
    client.force_authenticate(UserFactory.create())
    headers = {"Idempotency-Key": "8e03978e-40d5-43e8-bc93-6894a57f9324"}

    first = client.post("/api/orders/", {"item": "tea"}, format="json", headers=headers)
    replay = client.post("/api/orders/", {"item": "tea"}, format="json", headers=headers)

    assert first.status_code == replay.status_code == 201
    assert "Idempotent-Replayed" not in first
    assert (
        replay["Idempotent-Replayed"]
        in documented["headers"]["Idempotent-Replayed"]["schema"]["enum"]
    )


# Packaging


def test_package__only_its_contrib_module_imports_drf_spectacular() -> None:
    importers = {
        module.relative_to(PACKAGE).as_posix()
        for module in PACKAGE.rglob("*.py")
        if any(
            (
                isinstance(node, ast.Import)
                and any(a.name.startswith("drf_spectacular") for a in node.names)
            )
            or (
                isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("drf_spectacular")
            )
            for node in ast.walk(ast.parse(module.read_text()))
        )
    }

    assert importers == {"contrib/drf_spectacular.py"}


# Durations as a reader wants them, and a view's own 409.


def key_description(ttl: timedelta, settings: Any) -> str:
    settings.IDEMPOTENCY_TTL = ttl
    operation = generate()["paths"]["/drf/required/"]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
    return str(parameter["description"])


@pytest.mark.parametrize(
    ("ttl", "said"),
    [
        (timedelta(seconds=1.5), "1.5 seconds"),
        (timedelta(seconds=45), "45 seconds"),
        (timedelta(seconds=1), "1 second"),
        (timedelta(minutes=90), "90 minutes"),
        (timedelta(days=1), "24 hours"),
        (timedelta(days=3), "3 days"),
    ],
)
def test_key_description__says_how_long_a_key_is_kept(
    settings: Any, ttl: timedelta, said: str
) -> None:
    assert f"A key is kept for {said} after" in key_description(ttl, settings)


def test_error_responses__merged_into_a_409_the_view_declares_without_content() -> None:
    class ReservationView(IdempotencyMixin, generics.CreateAPIView[Any]):
        serializer_class = openapi_views.InvoiceSerializer
        idempotency_required = True

        @extend_schema(
            responses={
                201: openapi_views.InvoiceSerializer,
                409: OpenApiResponse(description="The seat is taken."),
            }
        )
        def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
            return super().post(request, *args, **kwargs)

    schema = generate(patterns=[path("reservations/", ReservationView.as_view())])
    response = schema["paths"]["/reservations/"]["post"]["responses"]["409"]

    assert response["description"].startswith("The seat is taken.\n\n")
    assert "idempotency_key_in_progress" in response["description"]
    assert "Retry-After" in response["headers"]
    assert response["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/IdempotencyErrorDetail"
    }
