"""Read the ``Idempotency-Key`` header: a bare token or an RFC 8941 sf-string."""

from __future__ import annotations

from django_idempotency.exceptions import IdempotencyKeyInvalid

MAX_KEY_LENGTH = 255


def parse_key(raw: str) -> str:
    """Return the key the header carries; raise ``IdempotencyKeyInvalid`` when it is malformed."""
    value = raw.strip(" \t")
    if value.startswith('"'):
        value = _unquote_sf_string(value)
    elif '"' in value or "\\" in value:
        raise IdempotencyKeyInvalid("The Idempotency-Key header has a stray quote or backslash.")
    elif "," in value:
        # Servers join repeated header lines with commas (RFC 9110 §5.3), so a bare comma
        # means two keys were sent, or one that cannot be told from two: quote it instead.
        raise IdempotencyKeyInvalid(
            "The Idempotency-Key header holds more than one key (a comma outside quotes)."
        )
    if not value:
        raise IdempotencyKeyInvalid("The Idempotency-Key header is empty.")
    if len(value) > MAX_KEY_LENGTH:
        raise IdempotencyKeyInvalid(
            f"The Idempotency-Key header is longer than {MAX_KEY_LENGTH} characters."
        )
    # DESIGN §3: visible ASCII only (0x21-0x7E), after unquoting.
    if not all("\x21" <= char <= "\x7e" for char in value):
        raise IdempotencyKeyInvalid(
            "The Idempotency-Key header may hold only visible ASCII characters."
        )
    return value


def _unquote_sf_string(value: str) -> str:
    # RFC 8941 §4.2.5: DQUOTE *( unescaped / "\" ( DQUOTE / "\" ) ) DQUOTE, printable ASCII.
    chars: list[str] = []
    index = 1
    while index < len(value):
        char = value[index]
        if char == "\\":
            index += 1
            if index >= len(value) or value[index] not in '"\\':
                raise IdempotencyKeyInvalid("The Idempotency-Key header has a bad escape.")
            chars.append(value[index])
        elif char == '"':
            if index != len(value) - 1:
                raise IdempotencyKeyInvalid(
                    "The Idempotency-Key header has characters after its closing quote."
                )
            return "".join(chars)
        elif not "\x20" <= char <= "\x7e":
            raise IdempotencyKeyInvalid(
                "The Idempotency-Key header may hold only visible ASCII characters."
            )
        else:
            chars.append(char)
        index += 1
    raise IdempotencyKeyInvalid("The Idempotency-Key header has no closing quote.")
