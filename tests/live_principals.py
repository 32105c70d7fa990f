"""Views for the live property test (tests/test_live_properties.py), under ``/props/``.

One view body behind every entry point and authentication scheme. Each run writes an
``Execution`` row naming the principal, the endpoint, the key and a fresh nonce, and answers
with a body carrying the same, so a response that reaches the wrong principal shows in its
body. Two request headers steer a run and are never fingerprinted: ``X-Props-Principal``
names the sender (the test's label, not a credential) and ``X-Props-Failure`` asks the view
to fail in one of the ways in ``FAILURES``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from rest_framework.authentication import (
    BaseAuthentication,
    BasicAuthentication,
    SessionAuthentication,
    TokenAuthentication,
)
from rest_framework.authtoken.models import Token
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_idempotency.decorators import idempotent
from django_idempotency.mixins import IdempotencyMixin
from tests.testapp.models import Execution

PRINCIPAL_HEADER = "X-Props-Principal"
FAILURE_HEADER = "X-Props-Failure"
API_KEY_HEADER = "X-Api-Key"
API_TOKEN_COOKIE = "api_token"
#: Prefix of the ``Execution`` labels these views write.
LABEL_PREFIX = "props"

#: How a view can be asked to fail: raise, answer something that cannot be rendered,
#: answer 500 itself, answer 400 itself.
FAILURES = ("raise", "render", "500", "400")


def execution_label(who: str, endpoint: str, key: str, nonce: str) -> str:
    return "|".join((LABEL_PREFIX, who, endpoint, key, nonce))


def parse_execution_label(label: str) -> tuple[str, str, str, str]:
    """Return ``(who, endpoint, key, nonce)`` from a label ``execution_label`` made."""
    _prefix, who, endpoint, key, nonce = label.split("|")
    return who, endpoint, key, nonce


class ApiKeyAuthentication(BaseAuthentication):
    """A DRF token sent in ``X-Api-Key`` instead of ``Authorization``."""

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, Token] | None:
        return _token_user(request.headers.get(API_KEY_HEADER))

    def authenticate_header(self, request: Request) -> str:
        return "Api-Key"


class CookieTokenAuthentication(BaseAuthentication):
    """A DRF token sent in the ``api_token`` cookie."""

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, Token] | None:
        return _token_user(request.COOKIES.get(API_TOKEN_COOKIE))


def _token_user(key: str | None) -> tuple[AbstractBaseUser, Token] | None:
    if not key:
        return None
    try:
        token = Token.objects.select_related("user").get(key=key)
    except Token.DoesNotExist:
        raise AuthenticationFailed("Invalid token.") from None
    return token.user, token


def _run(request: HttpRequest, endpoint: str, user: Any) -> dict[str, Any]:
    """Record one execution and return the body that tells whose it was."""
    nonce = uuid.uuid4().hex
    who = request.headers.get(PRINCIPAL_HEADER, "")
    key = request.headers.get("Idempotency-Key", "")
    Execution.objects.create(label=execution_label(who, endpoint, key, nonce))
    return {
        "who": who,
        "user": user.get_username() if user.is_authenticated else "",
        "endpoint": endpoint,
        "key": key,
        "nonce": nonce,
        "echo": json.loads(request.body or b"null"),
    }


def _status(failure: str | None) -> int:
    return {"500": 500, "400": 400}.get(failure or "", 201)


def _decorate(response: HttpResponse, document: dict[str, Any]) -> HttpResponse:
    # Allow-listed headers (replayed) and one that is not, so a replay's headers are checked.
    response["Location"] = f"/props/things/{document['nonce']}/"
    response["ETag"] = f'"{document["nonce"]}"'
    response["X-Not-Replayed"] = document["nonce"]
    return response


class _PropsView(APIView):
    endpoint = ""
    permission_classes = [IsAuthenticated]

    def post(self, request: Request) -> HttpResponse:
        failure = request.headers.get(FAILURE_HEADER)
        document = _run(request, self.endpoint, request.user)
        if failure == "raise":
            raise RuntimeError("the view failed")
        if failure == "render":
            # JSONRenderer cannot encode an object(): the response fails as it is rendered.
            return Response({**document, "oops": object()}, status=201)
        return _decorate(Response(document, status=_status(failure)), document)


class MixinSessionView(IdempotencyMixin, _PropsView):
    endpoint = "mixin_session"
    authentication_classes = [SessionAuthentication]


class MixinBasicView(IdempotencyMixin, _PropsView):
    endpoint = "mixin_basic"
    authentication_classes = [BasicAuthentication]


class MixinTokenView(IdempotencyMixin, _PropsView):
    endpoint = "mixin_token"
    authentication_classes = [TokenAuthentication]


class MixinApiKeyView(IdempotencyMixin, _PropsView):
    endpoint = "mixin_api_key"
    authentication_classes = [ApiKeyAuthentication]


class MixinOpenView(IdempotencyMixin, _PropsView):
    """Every scheme, and anonymous callers too."""

    endpoint = "mixin_open"
    authentication_classes = [
        SessionAuthentication,
        BasicAuthentication,
        TokenAuthentication,
        ApiKeyAuthentication,
        CookieTokenAuthentication,
    ]
    permission_classes = [AllowAny]


class WithoutMixinApiKeyView(_PropsView):
    """A DRF view without the mixin whose authentication reads ``X-Api-Key`` (issue 7, 1)."""

    endpoint = "drf_api_key"
    authentication_classes = [ApiKeyAuthentication]


class WithoutMixinCookieView(_PropsView):
    """A DRF view without the mixin whose authentication reads a cookie (issue 7, 1)."""

    endpoint = "drf_cookie"
    authentication_classes = [CookieTokenAuthentication]


class _Exploding:
    @property
    def explode(self) -> str:
        raise RuntimeError("the template failed")


def _django_answer(request: HttpRequest, endpoint: str) -> HttpResponse:
    failure = request.headers.get(FAILURE_HEADER)
    document = _run(request, endpoint, request.user)
    if failure == "raise":
        raise RuntimeError("the view failed")
    if failure == "render":
        template = engines["django"].from_string("{{ boom.explode }}")
        return TemplateResponse(request, template, {"boom": _Exploding()}, status=201)
    return _decorate(JsonResponse(document, status=_status(failure)), document)


@csrf_exempt
@idempotent
def django_login(request: HttpRequest) -> HttpResponse:
    """A plain view for session users only; it refuses anonymous callers itself."""
    if not request.user.is_authenticated:
        document = {
            "who": request.headers.get(PRINCIPAL_HEADER, ""),
            "refused": True,
            "nonce": uuid.uuid4().hex,
        }
        return JsonResponse(document, status=403)
    return _django_answer(request, "django_login")


@csrf_exempt
@idempotent
def django_open(request: HttpRequest) -> HttpResponse:
    """A plain view that serves session users and anonymous callers alike."""
    return _django_answer(request, "django_open")


def health(request: HttpRequest) -> HttpResponse:
    """Answer a plain GET that uses the database, as any page of the project would."""
    return JsonResponse({"executions": Execution.objects.exists()})


urlpatterns = [
    path("mixin/session/", MixinSessionView.as_view()),
    path("mixin/basic/", MixinBasicView.as_view()),
    path("mixin/token/", MixinTokenView.as_view()),
    path("mixin/api-key/", MixinApiKeyView.as_view()),
    path("mixin/open/", MixinOpenView.as_view()),
    path("drf/api-key/", WithoutMixinApiKeyView.as_view()),
    path("drf/cookie/", WithoutMixinCookieView.as_view()),
    path("django/login/", django_login),
    path("django/open/", django_open),
    path("health/", health),
]
