"""Errors the engine answers with; each has a stable code and problem type (RFC 9457)."""

from __future__ import annotations

import math
from datetime import timedelta

PROBLEM_TYPE_BASE = "https://django-idempotency.readthedocs.io/en/latest/errors/#"
#: The header as the messages name it; ``IdempotencyError.naming`` puts the configured one.
HEADER_IN_MESSAGES = "Idempotency-Key"


def problem_type(code: str) -> str:
    """Return the problem ``type`` URI of a stable error code: its heading in docs/errors.md."""
    return PROBLEM_TYPE_BASE + code.replace("_", "-")


class IdempotencyError(Exception):
    """A request that the idempotency layer answers itself, without running the view."""

    status_code: int = 400
    default_code: str = "idempotency_error"
    title: str = "Idempotency error"
    default_detail: str = "The request could not be handled idempotently."

    def __init__(
        self,
        detail: str | None = None,
        *,
        status_code: int | None = None,
        retry_after: timedelta | None = None,
    ) -> None:
        self.detail = detail or self.default_detail
        if status_code is not None:
            self.status_code = status_code
        self.retry_after = retry_after
        super().__init__(self.detail)

    def naming(self, header: str) -> IdempotencyError:
        """Say ``header`` where the detail names the Idempotency-Key header; return the error.

        The engine calls it with ``IDEMPOTENCY_HEADER``, so a client that must send
        ``X-Idempotency-Key`` is told about that header. The title, which names the problem
        type, stays the same for every occurrence (RFC 9457 §3.1.3).
        """
        if header != HEADER_IN_MESSAGES:
            self.detail = self.detail.replace(HEADER_IN_MESSAGES, header)
            self.args = (self.detail,)
        return self

    @property
    def type_uri(self) -> str:
        return problem_type(self.default_code)

    @property
    def retry_after_seconds(self) -> int | None:
        """Return ``Retry-After`` in whole seconds (at least 1), or None."""
        if self.retry_after is None:
            return None
        return max(1, math.ceil(self.retry_after.total_seconds()))


class IdempotencyKeyMissing(IdempotencyError):
    # IETF draft-ietf-httpapi-idempotency-key-header §2.7: a required key that is absent is 400.
    status_code = 400
    default_code = "idempotency_key_missing"
    title = "Idempotency-Key header missing"
    default_detail = "This endpoint requires the Idempotency-Key header."


class IdempotencyKeyInvalid(IdempotencyError):
    status_code = 400
    default_code = "idempotency_key_invalid"
    title = "Idempotency-Key header invalid"
    # keys.parse_key says exactly what is wrong; the rules are its own (keys.MAX_KEY_LENGTH).
    default_detail = "The Idempotency-Key header is malformed."


class IdempotencyKeyWithoutPrincipal(IdempotencyError):
    # DESIGN §2.2: a key belongs to a principal; without one, a stored response could reach
    # another caller. The request is refused rather than run unprotected.
    status_code = 403
    default_code = "idempotency_key_without_principal"
    title = "Idempotency-Key sent without a known caller"
    default_detail = (
        "This endpoint keeps Idempotency-Keys per caller, and this request has none: "
        "authenticate, or send the session cookie you were given."
    )


class IdempotencyKeyInProgress(IdempotencyError):
    # IETF draft §2.7: a retry while the original is still being processed is 409.
    status_code = 409
    default_code = "idempotency_key_in_progress"
    title = "Request with this Idempotency-Key is in progress"
    default_detail = "A request with this Idempotency-Key is still being processed; retry later."


class IdempotencyKeyMismatch(IdempotencyError):
    # IETF draft §2.7: a key reused with a different request payload is 422.
    status_code = 422
    default_code = "idempotency_key_mismatch"
    title = "Idempotency-Key reused with a different request"
    default_detail = (
        "This Idempotency-Key was already used for a different request "
        "(method, path, query or body)."
    )


class IdempotencyFingerprintUnknown(IdempotencyError):
    # A record made under a fingerprint version this deploy no longer computes: whether the
    # retry is the same request cannot be told, and running it again could do it twice.
    status_code = 422
    default_code = "idempotency_fingerprint_unknown"
    title = "Idempotency-Key stored under a fingerprint this server cannot check"
    default_detail = (
        "This Idempotency-Key was used for a request fingerprinted in a way this server no "
        "longer computes, so it cannot tell whether this is the same request. It did not run."
    )


class IdempotencyKeyNotReplayable(IdempotencyError):
    status_code = 409
    default_code = "idempotency_key_not_replayable"
    title = "Response for this Idempotency-Key cannot be replayed"
    default_detail = (
        "The request with this Idempotency-Key was processed, but its response "
        "(streaming, a file, or too large) was not stored. It will not run again."
    )


class IdempotencyLeaseExpired(IdempotencyError):
    status_code = 409
    default_code = "idempotency_lease_expired"
    title = "Request outlived its Idempotency-Key lease"
    default_detail = (
        "Processing took longer than the Idempotency-Key lease, so its changes were "
        "rolled back. Retry the request."
    )


class IdempotencyRequestTooLarge(IdempotencyError):
    status_code = 413
    default_code = "idempotency_request_too_large"
    title = "Request body too large"
    default_detail = "The request body is larger than this server accepts."


class IdempotencyStoreUnavailable(IdempotencyError):
    # DESIGN §2.5: fail closed when the store cannot confirm ownership of the key.
    status_code = 503
    default_code = "idempotency_store_unavailable"
    title = "Idempotency store unavailable"
    default_detail = "The request was not processed because idempotency keys cannot be checked now."


class IdempotencyResponseUnreadable(IdempotencyError):
    # The stored body is sealed and this server cannot open it (its key left
    # IDEMPOTENCY_ENCRYPTION_KEYS too soon, or the encryptor was unset). Not a 4xx: the
    # client must not take a new key, which could run the request twice; the same key
    # replays once an operator restores the key.
    status_code = 503
    default_code = "idempotency_response_unreadable"
    title = "Stored response cannot be read"
    default_detail = (
        "The request with this Idempotency-Key was processed, but this server cannot decrypt "
        "its stored response now. It did not run again; retry later with the same key."
    )


class IdempotencyReplayNotAcceptable(IdempotencyError):
    # RFC 9110 §15.5.7 and §12.5.3: the stored body has a content coding that this request's
    # Accept-Encoding refuses, and a replay is those exact bytes or nothing.
    status_code = 406
    default_code = "idempotency_replay_not_acceptable"
    title = "Stored response not acceptable to this request"
    default_detail = (
        "The response stored for this Idempotency-Key has a content coding that this "
        "request's Accept-Encoding does not accept. The request was not run again; retry "
        "with an Accept-Encoding that accepts the coding, or without one."
    )
