"""Stored bodies sealed by IDEMPOTENCY_ENCRYPTOR, on each storage and through each entry point.

The store never holds a body in clear; a replay is still the exact bytes the view answered;
keys rotate; a body this server cannot open is a 503 with its own code, never a run again.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import pytest
from cryptography.fernet import Fernet, InvalidToken
from django.core.checks import Error
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from django.urls import reverse
from django.views.debug import ExceptionReporter

from django_idempotency import checks
from django_idempotency.conf import idempotency_settings
from django_idempotency.encryption import SEALED, FernetEncryptor, Unreadable, seal, unseal
from django_idempotency.models import IdempotencyKey
from tests.factories import IdempotencyKeyFactory
from tests.problems import is_problem
from tests.records import stored_body
from tests.test_behaviour import (  # noqa: F401  (fixtures)
    Caller,
    client,
    entry_point,
    executions,
    send,
    storage,
    url,
)

pytestmark = pytest.mark.django_db(transaction=True)

FERNET = "django_idempotency.encryption.FernetEncryptor"
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
NOT_A_KEY = "short-and-secret"
#: A record's identity, which its sealed body is bound to.
RECORD = {"scope": "user:auth.user:1", "key": "k"}


@pytest.fixture
def encrypted(settings: Any) -> Any:
    """Encryption on, with one key."""
    settings.IDEMPOTENCY_ENCRYPTOR = FERNET
    settings.IDEMPOTENCY_ENCRYPTION_KEYS = [OLD_KEY]
    return settings


def test_stored_body__is_sealed_and_the_replay_is_the_exact_bytes(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    encrypted: Any,
) -> None:
    first = send(client, url, {"label": "card 4242"}, key="k")

    stored = stored_body("k")
    assert stored.startswith(SEALED)
    assert b"4242" not in stored
    replay = send(client, url, {"label": "card 4242"}, key="k")
    assert replay.status_code == first.status_code
    assert replay.content == first.content
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert executions("card 4242") == 1


def test_rotation__a_new_first_key_seals_and_the_old_one_still_opens(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    encrypted: Any,
) -> None:
    before = send(client, url, {"label": "pay"}, key="before")
    encrypted.IDEMPOTENCY_ENCRYPTION_KEYS = [NEW_KEY, OLD_KEY]

    send(client, url, {"label": "pay"}, key="after")

    assert send(client, url, {"label": "pay"}, key="before").content == before.content
    sealed = stored_body("after")[len(SEALED) :]
    assert Fernet(NEW_KEY.encode()).decrypt(sealed)
    with pytest.raises(InvalidToken):
        Fernet(OLD_KEY.encode()).decrypt(sealed)


def test_a_body_sealed_by_a_dropped_key__is_503_and_never_runs_again(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    encrypted: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    send(client, url, {"label": "pay"}, key="k")
    encrypted.IDEMPOTENCY_ENCRYPTION_KEYS = [NEW_KEY]  # the old key dropped too soon

    with caplog.at_level(logging.ERROR, logger="django_idempotency.outcomes"):
        retry = send(client, url, {"label": "pay"}, key="k")

    assert retry.status_code == 503
    assert is_problem(retry, "idempotency_response_unreadable")
    assert "Retry-After" in retry.headers
    assert executions("pay") == 1
    assert "IDEMPOTENCY_ENCRYPTION_KEYS" in caplog.text
    assert OLD_KEY not in caplog.text
    assert NEW_KEY not in caplog.text


def test_turning_encryption_off__leaves_sealed_bodies_unreadable_not_replayed_as_ciphertext(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    encrypted: Any,
) -> None:
    send(client, url, {"label": "pay"}, key="k")
    encrypted.IDEMPOTENCY_ENCRYPTOR = None

    retry = send(client, url, {"label": "pay"}, key="k")

    assert retry.status_code == 503
    assert is_problem(retry, "idempotency_response_unreadable")
    assert executions("pay") == 1


def test_turning_encryption_on__still_replays_bodies_stored_in_clear(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
) -> None:
    first = send(client, url, {"label": "pay"}, key="k")
    settings.IDEMPOTENCY_ENCRYPTOR = FERNET
    settings.IDEMPOTENCY_ENCRYPTION_KEYS = [OLD_KEY]

    assert send(client, url, {"label": "pay"}, key="k").content == first.content
    assert executions("pay") == 1


# The envelope


def test_seal__a_body_that_looks_sealed_is_sealed_again() -> None:
    # A view may answer any bytes, even the envelope's own: it still round-trips.
    encryptor = FernetEncryptor([OLD_KEY])
    body = SEALED + b"not really"

    assert unseal(seal(body, encryptor, **RECORD), encryptor, **RECORD) == body


def test_unseal__a_sealed_body_without_an_encryptor_is_unreadable() -> None:
    with pytest.raises(Unreadable):
        unseal(seal(b"x", FernetEncryptor([OLD_KEY]), **RECORD), None, **RECORD)


# Misconfiguration: refused where written, never repeating a key


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "IDEMPOTENCY_ENCRYPTION_KEYS is empty"),
        (["short-and-secret"], "key 1 is not a Fernet key"),
        ([OLD_KEY, "short-and-secret"], "key 2 is not a Fernet key"),
    ],
)
def test_fernet__bad_keys_are_refused_without_naming_them(
    settings: Any, keys: list[str], message: str
) -> None:
    settings.IDEMPOTENCY_ENCRYPTOR = FERNET
    settings.IDEMPOTENCY_ENCRYPTION_KEYS = keys

    with pytest.raises(ImproperlyConfigured, match=message) as refused:
        idempotency_settings.value("encryptor")
    assert "short-and-secret" not in str(refused.value)
    (error,) = checks.check_encryptor(None)
    assert isinstance(error, Error)
    assert error.id == "django_idempotency.E006"
    assert "short-and-secret" not in error.msg


def test_keys_of_the_wrong_type__are_e001_without_the_value(settings: Any) -> None:
    settings.IDEMPOTENCY_ENCRYPTOR = FERNET
    settings.IDEMPOTENCY_ENCRYPTION_KEYS = "one-secret-key-as-a-str"

    (error,) = checks.check_settings(None)

    assert error.id == "django_idempotency.E001"
    assert "IDEMPOTENCY_ENCRYPTION_KEYS is a str" in error.msg
    assert "one-secret-key" not in error.msg
    assert checks.check_encryptor(None) == []  # E001 says it once


def test_an_encryptor_that_is_not_one__is_refused(settings: Any) -> None:
    settings.IDEMPOTENCY_ENCRYPTOR = "builtins.object"

    with pytest.raises(ImproperlyConfigured, match="does not build an encryptor"):
        idempotency_settings.value("encryptor")


def test_a_covered_request_under_a_bad_key__never_runs(
    client: Caller,  # noqa: F811
    url: str,  # noqa: F811
    settings: Any,
) -> None:
    settings.IDEMPOTENCY_ENCRYPTOR = FERNET
    settings.IDEMPOTENCY_ENCRYPTION_KEYS = ["short-and-secret"]

    response = send(client, url, {"label": "pay"}, key="k")

    assert response.status_code == 500  # ImproperlyConfigured, as every bad setting
    assert executions("pay") == 0
    assert not IdempotencyKey.objects.exists()


# The admin


def admin_page(admin_client: Client, record: IdempotencyKey) -> str:
    page = reverse("admin:django_idempotency_idempotencykey_change", args=[record.pk])
    return str(admin_client.get(page).content.decode())


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_admin__shows_a_sealed_body_opened(admin_client: Client, encrypted: Any) -> None:
    body = json.dumps({"card": "4242"}).encode()
    record = IdempotencyKeyFactory.build()
    record.response_body = seal(
        body, FernetEncryptor([OLD_KEY]), scope=record.scope, key=record.key
    )
    record.save()

    page = admin_page(admin_client, record)

    assert "&quot;card&quot;: &quot;4242&quot;" in page
    assert "Stored encrypted; shown decrypted." in page


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_admin__says_a_body_it_cannot_open_is_encrypted(
    admin_client: Client, encrypted: Any
) -> None:
    record = IdempotencyKeyFactory.build()
    record.response_body = seal(
        b'{"card": "4242"}', FernetEncryptor([NEW_KEY]), scope=record.scope, key=record.key
    )
    record.save()

    page = admin_page(admin_client, record)

    assert "IDEMPOTENCY_ENCRYPTOR cannot open it" in page
    assert "4242" not in page


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_admin__hides_bodies_when_told_to(admin_client: Client, settings: Any) -> None:
    settings.IDEMPOTENCY_ADMIN_SHOW_BODIES = False
    record = IdempotencyKeyFactory.create(response_body=b'{"card": "4242"}')

    page = admin_page(admin_client, record)

    assert "hidden (IDEMPOTENCY_ADMIN_SHOW_BODIES is False), 16 bytes" in page
    assert "4242" not in page


@pytest.mark.parametrize("storage_backend", ["database"], indirect=True)
def test_error_reports__never_show_the_keys(settings: Any, rf: Any) -> None:
    # What AdminEmailHandler mails and what error trackers read: the frames' locals.
    settings.DEBUG = False
    try:
        FernetEncryptor([NEW_KEY, NOT_A_KEY])
    except ImproperlyConfigured:
        report = ExceptionReporter(rf.post("/"), *sys.exc_info()).get_traceback_html()
    assert "FernetEncryptor" in report
    assert NEW_KEY not in report
    assert NOT_A_KEY not in report


def test_unseal__a_body_sealed_for_another_record_is_unreadable() -> None:
    # Someone who can write to the store but not read it copies A's sealed body into B's
    # record: B's retry must not replay A's response.
    encryptor = FernetEncryptor([OLD_KEY])
    alices = seal(b'{"card": "alice-4242"}', encryptor, scope="user:auth.user:1", key="k")

    with pytest.raises(Unreadable, match="another record"):
        unseal(alices, encryptor, scope="user:auth.user:2", key="k")
    with pytest.raises(Unreadable, match="another record"):
        unseal(alices, encryptor, scope="user:auth.user:1", key="other")


def test_an_encryptor_that_fails_to_build__is_a_setting_that_cannot_be_used(
    settings: Any,
) -> None:
    # A KMS-backed encryptor whose service is down: refused like any bad setting (E006 and
    # covered requests), never a crash of the checks or of requests the layer leaves alone.
    settings.IDEMPOTENCY_ENCRYPTOR = "tests.test_encryption.KmsDown"

    with pytest.raises(ImproperlyConfigured, match="failed to build \\(ConnectionError\\)"):
        idempotency_settings.value("encryptor")
    (error,) = checks.check_encryptor(None)
    assert error.id == "django_idempotency.E006"


class KmsDown:
    def __init__(self) -> None:
        raise ConnectionError("kms.example.com did not answer")


def test_without_cryptography__fernet_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.fernet", None)  # as if not installed

    with pytest.raises(ImproperlyConfigured, match=r"django-idempotency\[encryption\]"):
        FernetEncryptor([Fernet.generate_key().decode()])


def test_an_encryptor_path_that_does_not_import__names_the_setting() -> None:
    from django_idempotency.encryption import build_encryptor

    with pytest.raises(ImproperlyConfigured, match="IDEMPOTENCY_ENCRYPTOR: cannot import"):
        build_encryptor("no.such.Encryptor")
