"""W005: behind django-cors-headers, browsers must be allowed the key and shown the replies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import modify_settings, override_settings

from django_idempotency.checks_cors import check_cors_headers

pytestmark = pytest.mark.django_db


@pytest.fixture
def with_corsheaders() -> Iterator[None]:
    with modify_settings(INSTALLED_APPS={"append": "corsheaders"}):
        yield


def test_without_corsheaders__nothing_to_say() -> None:
    assert check_cors_headers(None) == []


@pytest.mark.usefixtures("with_corsheaders")
def test_its_defaults__hide_the_key_and_the_replies() -> None:
    (warning,) = check_cors_headers(None)

    assert warning.id == "django_idempotency.W005"
    assert "'Idempotency-Key' in CORS_ALLOW_HEADERS" in warning.msg
    assert "'Retry-After' in CORS_EXPOSE_HEADERS" in warning.msg
    assert "'Idempotent-Replayed' in CORS_EXPOSE_HEADERS" in warning.msg


@pytest.mark.usefixtures("with_corsheaders")
def test_the_hint__is_a_configuration_that_passes() -> None:
    from corsheaders.defaults import default_headers

    with override_settings(
        CORS_ALLOW_HEADERS=(*default_headers, "Idempotency-Key"),
        CORS_EXPOSE_HEADERS=["Retry-After", "Idempotent-Replayed"],
    ):
        assert check_cors_headers(None) == []


@pytest.mark.usefixtures("with_corsheaders")
def test_the_configured_header__is_the_one_to_allow() -> None:
    with override_settings(
        IDEMPOTENCY_HEADER="X-Idempotency-Key",
        CORS_ALLOW_HEADERS=["idempotency-key"],
        CORS_EXPOSE_HEADERS=["retry-after", "idempotent-replayed"],
    ):
        (warning,) = check_cors_headers(None)

    assert "'X-Idempotency-Key' in CORS_ALLOW_HEADERS" in warning.msg


@pytest.mark.usefixtures("with_corsheaders")
def test_a_mistyped_header_setting__is_left_to_e001() -> None:
    with override_settings(IDEMPOTENCY_HEADER=42):
        assert check_cors_headers(None) == []
