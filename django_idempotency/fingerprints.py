"""What a request asks for, as a hash: method, path, query, content type and body."""

from __future__ import annotations

import hashlib

from django.http import HttpRequest
from django.http.request import RawPostDataException


def default_fingerprint(request: HttpRequest) -> str:
    """Return a SHA-256 over the method, path, sorted query, content type and body."""
    digest = hashlib.sha256()
    query = sorted((name, value) for name, values in request.GET.lists() for value in values)
    # The media type alone: DRF's request reports parameters (charset) that Django's drops.
    media_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    for part in (request.method or "", request.path, repr(query), media_type):
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\x00")
    digest.update(_body_digest(request))
    return digest.hexdigest()


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
