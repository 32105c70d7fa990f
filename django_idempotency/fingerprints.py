"""What a request asks for, as a hash, and the version of the fingerprint that made it.

A stored fingerprint is ``"<version>:<digest>"``. The version is the algorithm's id and a
digest of the configuration that applied, so a retry made across a deploy that changed how
requests are fingerprinted is compared under the version its record was made with
(docs/behaviour.md, "Fingerprint versions").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from typing import cast

from django.http import HttpRequest
from django.http.request import RawPostDataException
from django.utils.http import parse_header_parameters
from django.utils.module_loading import import_string

from django_idempotency import canonical

#: The length a digest is kept at; a custom fingerprint that is longer is hashed to fit.
DIGEST_LENGTH = 64
#: Between the version and the digest of a stored fingerprint; never in a version.
SEPARATOR = ":"


def default_fingerprint(request: HttpRequest) -> str:
    """Return a SHA-256 over the method, path, sorted query, content type and body's meaning.

    A JSON or urlencoded body counts by what it says (``canonical``): a retry from a client
    that orders keys or spaces differently is the same request. Any other body, or one that
    is not plain JSON, counts by its bytes.
    """
    return _fingerprint(request, _meaning_digest(request))


def exact_fingerprint(request: HttpRequest) -> str:
    """Return a SHA-256 over the method, path, sorted query, content type and body bytes.

    The default before this release (``request-1``): a body re-encoded by another client
    library is another request. Set ``IDEMPOTENCY_FINGERPRINT`` to it to keep that.
    """
    return _fingerprint(request, _body_digest(request))


def _fingerprint(request: HttpRequest, body_digest: bytes) -> str:
    digest = hashlib.sha256()
    query = sorted((name, value) for name, values in request.GET.lists() for value in values)
    for part in (request.method or "", request.path, repr(query), _media_type(request)):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\x00")
    digest.update(body_digest)
    return digest.hexdigest()


def _media_type(request: HttpRequest) -> str:
    # The media type alone: DRF's request reports parameters (charset) that Django's drops.
    return str(request.META.get("CONTENT_TYPE", "")).split(";")[0].strip().lower()


def _meaning_digest(request: HttpRequest) -> bytes:
    media_type = _media_type(request)
    if not (canonical.is_json(media_type) or media_type == canonical.FORM_TYPE):
        return _body_digest(request)
    try:
        body = request.body
    except RawPostDataException:
        return _body_digest(request)
    try:
        if canonical.is_json(media_type):
            text = "json\x00" + canonical.canonical_json(body)
        else:
            charset = parse_header_parameters(request.META.get("CONTENT_TYPE", ""))[1]
            text = "form\x00" + canonical.canonical_form(body, charset.get("charset", "utf-8"))
    except canonical.NotCanonical:
        return hashlib.sha256(body).digest()
    return hashlib.sha256(text.encode()).digest()


def _body_digest(request: HttpRequest) -> bytes:
    try:
        return hashlib.sha256(request.body).digest()
    except RawPostDataException:
        # A multipart body already parsed by earlier code (CSRF checks read request.POST)
        # is no longer readable raw: hash the parsed fields and files instead.
        digest = hashlib.sha256(b"multipart\x00")
        for name, values in sorted(request.POST.lists()):
            for value in values:
                digest.update(f"{name}={value}\x00".encode("utf-8", "surrogateescape"))
        for name, files in sorted(request.FILES.lists()):
            for upload in files:
                digest.update(f"{name}:{upload.name}:{upload.size}\x00".encode())
                for chunk in upload.chunks():
                    digest.update(chunk)
                upload.seek(0)
        return digest.digest()


Fingerprint = Callable[[HttpRequest], str]


class SelectedFields:
    """A fingerprint of the method, path, query, media type and the named JSON body fields.

    For a view whose clients add fields that change on every retry (a timestamp, a trace
    id): ``fingerprint=["amount", "currency", "customer.id", "items.*.sku"]``. A body that
    is not JSON counts whole, by its meaning, as the default fingerprint counts it.
    """

    fingerprint_algorithm = "fields-1"

    def __init__(self, paths: Iterable[str]) -> None:
        self.paths = tuple(paths)
        if not self.paths or not all(canonical.is_field_path(path) for path in self.paths):
            raise ValueError(f"not a list of field paths: {self.paths!r}")
        #: What the version digests: the fields named, in their order.
        self.fingerprint_config = {"fields": ",".join(self.paths)}

    def __call__(self, request: HttpRequest) -> str:
        if canonical.is_json(_media_type(request)):
            try:
                text = "fields\x00" + canonical.canonical_fields(request.body, self.paths)
            except (canonical.NotCanonical, RawPostDataException):
                pass
            else:
                return _fingerprint(request, hashlib.sha256(text.encode()).digest())
        return default_fingerprint(request)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SelectedFields) and other.paths == self.paths

    def __hash__(self) -> int:
        return hash(self.paths)

    def __repr__(self) -> str:
        return f"SelectedFields({list(self.paths)!r})"


def is_field_list(value: object) -> bool:
    """Whether ``value`` is a non-empty list or tuple of JSON field paths."""
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(canonical.is_field_path(path) for path in value)
    )


def resolve_fingerprint(value: str | Fingerprint | Iterable[str]) -> Fingerprint:
    """Return the fingerprint an option names: a callable, its dotted path, or field paths."""
    if is_field_list(value):
        return SelectedFields(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        return cast("Fingerprint", import_string(value))
    return cast("Fingerprint", value)


#: The algorithms this release ships, by id. An id names one way of computing a digest
#: forever: a release that fingerprints differently adds an id and keeps the old one while
#: records made under it may still be retried.
ALGORITHMS: dict[str, Fingerprint] = {
    "request-1": exact_fingerprint,
    "request-2": default_fingerprint,
}
#: The configurable algorithms this release ships, by id: their version digests their
#: configuration (for ``fields-1``, the fields named).
CONFIGURED: dict[str, type] = {"fields-1": SelectedFields}
#: The algorithm of the fingerprints stored before versions existed (bare digests).
LEGACY_ALGORITHM = "request-1"
#: What a version looks like: an algorithm id, a dot and eight hex digits of configuration.
_VERSION = re.compile(r"[a-z0-9-]+\.[0-9a-f]{8}")
#: The algorithm id of every fingerprint function that this release does not ship.
CUSTOM = "custom"


def version_of(function: Fingerprint) -> str:
    """Return the version of the fingerprints ``function`` makes: algorithm and configuration.

    A shipped algorithm is known by its id. A custom function is ``custom`` with a digest of
    its ``fingerprint_version`` attribute if it has one, else of its qualified name: give it
    a new ``fingerprint_version`` when it starts computing differently.
    """
    for algorithm, shipped in ALGORITHMS.items():
        if function is shipped:
            return f"{algorithm}.{_config_digest({})}"
    configured = getattr(function, "fingerprint_algorithm", None)
    if isinstance(configured, str) and configured in CONFIGURED:
        return f"{configured}.{_config_digest(dict(function.fingerprint_config))}"  # type: ignore[attr-defined]
    label = getattr(function, "fingerprint_version", None)
    if label is None:
        label = getattr(function, "__module__", "") + "." + _qualified_name(function)
    return f"{CUSTOM}.{_config_digest({'function': str(label)})}"


def versioned(version: str, fingerprint: str) -> str:
    """Return a fingerprint as stored: its version, the separator and its bounded digest."""
    return f"{version}{SEPARATOR}{bounded(fingerprint, DIGEST_LENGTH)}"


def compare(
    stored: str, fingerprint: str, request: HttpRequest, candidates: Iterable[Fingerprint]
) -> bool | None:
    """Whether ``request`` is the request ``stored`` was made for; ``None`` if it cannot say.

    ``fingerprint`` is the request's under the current version. A stored fingerprint
    under another version is recomputed with the first of ``candidates`` that has that
    version; with none, the answer is ``None``. A fingerprint stored before versions
    existed (no separator) is compared with the current one, as it was then.
    """
    stored_version, stored_digest = split(stored)
    version, digest = split(fingerprint)
    if stored_version is None:
        # Made by a release before versions: by the view's function then, or by the default
        # of that time, the byte-exact request-1.
        if stored == digest:
            return True
        return stored == ALGORITHMS[LEGACY_ALGORITHM](request)
    if stored_version == version:
        return stored_digest == digest
    for candidate in candidates:
        if version_of(candidate) == stored_version:
            return bounded(candidate(request), DIGEST_LENGTH) == stored_digest
    return None


def split(stored: str) -> tuple[str | None, str]:
    """Return a stored fingerprint's version (``None`` before versions existed) and digest."""
    version, separator, digest = stored.partition(SEPARATOR)
    if separator and _VERSION.fullmatch(version):
        return version, digest
    return None, stored


def bounded(value: str, limit: int) -> str:
    """Return ``value``, or its SHA-256 when longer than ``limit`` characters."""
    if len(value) <= limit:
        return value
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def _config_digest(config: dict[str, str]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:8]


def _qualified_name(function: object) -> str:
    # A bound method is named by its function; a partial or an instance by its class.
    return str(getattr(function, "__qualname__", None) or type(function).__qualname__)
