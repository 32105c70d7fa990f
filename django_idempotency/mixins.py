"""``IdempotencyMixin``: idempotency keys for Django REST framework views."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections, transaction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from rest_framework import exceptions
from rest_framework import views as drf_views
from rest_framework.request import Request
from rest_framework.views import APIView

from django_idempotency import engine
from django_idempotency.conf import idempotency_settings
from django_idempotency.exceptions import IdempotencyError
from django_idempotency.handling import HANDLED_BY_VIEW_ATTRIBUTE
from django_idempotency.held import Held
from django_idempotency.options import (
    VIEW_OPTION_NAMES,
    AnonymousMode,
    OnConflict,
    resolve_callable,
    validate_options,
)
from django_idempotency.policy import Policy, policy_for
from django_idempotency.storage.base import Storage
from django_idempotency.validation import SAFE_METHODS, did_you_mean


class IdempotencyAPIException(exceptions.APIException):
    """An ``IdempotencyError`` for DRF's exception handler, with its status, code and wait."""

    def __init__(self, error: IdempotencyError) -> None:
        self.status_code = error.status_code
        self.default_code = error.default_code
        super().__init__(detail=error.detail, code=error.default_code)
        self.error = error
        # DRF's exception handler turns ``wait`` into Retry-After.
        self.wait = error.retry_after_seconds


class _Replay(Exception):
    """Carries a replayed response from ``initial()`` past the handler."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__()
        self.response = response


class _NonAtomicFor(set[str]):
    """``_non_atomic_requests`` that also holds the alias the view's claims commit on.

    Django wraps views in ``ATOMIC_REQUESTS`` transactions before ``dispatch()``. The claim
    must commit before the view's transaction opens, so the mixin opens that transaction
    itself, after the claim, on the alias this names (resolved per request).
    """

    def __init__(self, alias: Callable[[], str | None]) -> None:
        super().__init__()
        self._alias = alias

    def __contains__(self, alias: object) -> bool:
        return alias == self._alias() or super().__contains__(alias)


class IdempotencyMixin:
    """Make a DRF view honour ``Idempotency-Key``; put it first among the view's bases.

    Each per-view option (docs/settings.md) is an ``idempotency_<name>`` attribute
    (``None`` keeps the setting). ``get_idempotency_options()`` decides per request; the
    common options also have their own ``get_idempotency_<name>()`` hook.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # After APIView in the MRO, the mixin's dispatch() and as_view() never run and
        # the view would silently lose its protection.
        mro = cls.__mro__
        if APIView in mro and mro.index(APIView) < mro.index(IdempotencyMixin):
            raise ImproperlyConfigured(
                f"{cls.__qualname__} must list IdempotencyMixin before its DRF view class: "
                f"class {cls.__name__}(IdempotencyMixin, ...)."
            )
        owner = f"{cls.__module__}.{cls.__qualname__}"
        _refuse_unknown_names(cls, owner)
        validate_options(cls.idempotency_class_options(), owner=owner, prefix="idempotency_")

    idempotency_required: bool | None = None
    idempotency_methods: Iterable[str] | None = None
    idempotency_ttl: timedelta | int | None = None
    idempotency_lease: timedelta | int | None = None
    idempotency_on_conflict: OnConflict | None = None
    idempotency_wait_timeout: timedelta | int | None = None
    idempotency_retry_after: timedelta | int | None = None
    idempotency_mismatch_status: int | None = None
    idempotency_replay_headers: Iterable[str] | None = None
    idempotency_max_response_size: int | None = None
    idempotency_atomic: bool | None = None
    idempotency_store_server_errors: bool | None = None
    idempotency_fail_open: bool | None = None
    idempotency_anonymous: AnonymousMode | None = None
    idempotency_scope: str | Callable[[HttpRequest], str] | None = None
    idempotency_fingerprint: str | Callable[[HttpRequest], str] | None = None
    idempotency_storage: str | Storage | None = None

    _idempotency_execution: engine.Execution | None = None
    _idempotency_atomic: Held | None = None

    # The DRF-facing overrides return ``Any``: DRF's stubs promise a DRF ``Response`` where
    # DRF itself accepts any HttpResponse (a replay is one), and ``as_view`` differs between
    # APIView and ViewSetMixin. ``Any`` keeps both ``(IdempotencyMixin, APIView)`` and
    # ``(IdempotencyMixin, ModelViewSet)`` free of mypy errors in users' code.

    @classmethod
    def as_view(cls, *args: Any, **initkwargs: Any) -> Any:
        view = super().as_view(*args, **initkwargs)  # type: ignore[misc]
        setattr(view, HANDLED_BY_VIEW_ATTRIBUTE, True)
        view._non_atomic_requests = _NonAtomicFor(cls._idempotency_claim_alias)
        return view

    @classmethod
    def idempotency_class_options(cls) -> dict[str, Any]:
        """Return the view's ``idempotency_*`` class attributes, as options by name."""
        return {name: getattr(cls, f"idempotency_{name}") for name in VIEW_OPTION_NAMES}

    @classmethod
    def _idempotency_claim_alias(cls) -> str | None:
        try:
            policy = Policy.build(cls.idempotency_class_options())
        except ImproperlyConfigured:
            # A bad setting: Django keeps its own ATOMIC_REQUESTS transaction, in which a
            # covered request is refused (initial() raises) and an uncovered one runs.
            return None
        return policy.storage.using if policy.is_atomic else None

    # Hooks: override to decide per request.

    def get_idempotency_required(self) -> bool | None:
        return self.idempotency_required

    def get_idempotency_methods(self) -> Iterable[str] | None:
        return self.idempotency_methods

    def get_idempotency_ttl(self) -> timedelta | int | None:
        return self.idempotency_ttl

    def get_idempotency_lease(self) -> timedelta | int | None:
        return self.idempotency_lease

    def get_idempotency_on_conflict(self) -> OnConflict | None:
        return self.idempotency_on_conflict

    def get_idempotency_scope(self, request: HttpRequest) -> str:
        """Return whose key this is; by default the DRF-authenticated user."""
        return resolve_callable(self.idempotency_scope or idempotency_settings.SCOPE)(request)

    def get_idempotency_fingerprint(self, request: HttpRequest) -> str:
        """Return the hash that identifies what the request asks for."""
        chosen = self.idempotency_fingerprint or idempotency_settings.FINGERPRINT
        return resolve_callable(chosen)(request)

    def get_idempotency_options(self) -> dict[str, Any]:
        """Return this request's overrides of the settings."""
        # Instance attributes too: as_view(idempotency_ttl=...) sets them per view.
        options = {name: getattr(self, f"idempotency_{name}") for name in VIEW_OPTION_NAMES}
        options.update(
            required=self.get_idempotency_required(),
            methods=self.get_idempotency_methods(),
            ttl=self.get_idempotency_ttl(),
            lease=self.get_idempotency_lease(),
            on_conflict=self.get_idempotency_on_conflict(),
        )
        # The scope and fingerprint hooks take the request; passed only when a view overrides
        # them, since the defaults ask the same options and a view's policy is then built once.
        view_class = type(self)
        if view_class.get_idempotency_scope is not IdempotencyMixin.get_idempotency_scope:
            options["scope"] = self.get_idempotency_scope
        if (
            view_class.get_idempotency_fingerprint
            is not IdempotencyMixin.get_idempotency_fingerprint
        ):
            options["fingerprint"] = self.get_idempotency_fingerprint
        return options

    # DRF's request cycle.

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        self._idempotency_execution = None
        self._idempotency_atomic = None
        _keep_body(request)
        try:
            return super().dispatch(request, *args, **kwargs)  # type: ignore[misc, no-any-return]
        except BaseException:
            execution, self._idempotency_execution = self._idempotency_execution, None
            if execution is not None:
                execution.abort()
            self._close_request_transaction(failed=True)
            raise

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Authentication, permissions and throttles run first: the scope is the DRF user,
        # and a request refused by them never claims a key.
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        policy = policy_for(request, self.get_idempotency_options())
        if policy is None:  # a bad setting, and a request the layer does not cover
            self._open_request_transaction(type(self)._idempotency_claim_alias())
            return
        try:
            decision = engine.begin(request, policy)
            if isinstance(decision, engine.Execution):
                decision.enter()  # a store failure here frees the key and raises: 503
        except IdempotencyError as error:
            raise IdempotencyAPIException(error) from error
        if isinstance(decision, HttpResponse):
            raise _Replay(decision)
        if isinstance(decision, engine.Execution):
            self._idempotency_execution = decision
            return
        self._open_request_transaction(policy.storage.using if policy.is_atomic else None)

    def handle_exception(self, exc: Exception) -> Any:
        if isinstance(exc, _Replay):
            return exc.response
        response = super().handle_exception(exc)  # type: ignore[misc]
        if isinstance(exc, IdempotencyAPIException):
            _add_code(self, exc, response)
        return response

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]
        execution, self._idempotency_execution = self._idempotency_execution, None
        if execution is None:
            self._close_request_transaction(failed=False)
            return response
        try:
            # finish() renders the response; if rendering (or anything else) fails, it rolls
            # back and settles the key before the error goes on to Django's handler.
            return execution.finish(response)
        except IdempotencyError as error:
            # Rendered by the project's DRF exception handler, like every other error.
            failure = self.handle_exception(IdempotencyAPIException(error))
            return super().finalize_response(request, failure, *args, **kwargs)  # type: ignore[misc]

    def _open_request_transaction(self, alias: str | None) -> None:
        # The view opted out of ATOMIC_REQUESTS on the claim's alias (see _NonAtomicFor);
        # a request that claims nothing still gets the transaction it was promised.
        if alias is not None and connections.settings[alias]["ATOMIC_REQUESTS"]:
            self._idempotency_atomic = Held(transaction.atomic(using=alias))

    def _close_request_transaction(self, *, failed: bool) -> None:
        atomic, self._idempotency_atomic = self._idempotency_atomic, None
        if atomic is not None:
            atomic.close(commit=not failed)


def _add_code(view: Any, exc: IdempotencyAPIException, response: Any) -> None:
    """Put the error's code beside DRF's default ``{"detail": ...}``, so clients can act on it.

    Only under DRF's own exception handler: a project's handler renders its own format,
    and receives the exception with its code as before.
    """
    if view.get_exception_handler() is not drf_views.exception_handler:
        return
    data = getattr(response, "data", None)
    if isinstance(data, dict) and set(data) == {"detail"}:
        data["code"] = exc.default_code


def _keep_body(request: HttpRequest) -> None:
    # Read the body now, while it can still be read raw: DRF's parsers (or a CSRF check in
    # SessionAuthentication) would otherwise consume the stream before the fingerprint.
    if request.method in SAFE_METHODS:
        return
    try:
        if idempotency_settings.HEADER not in request.headers:
            return
    except ImproperlyConfigured:
        pass  # a bad IDEMPOTENCY_HEADER: the request counts as keyed (fail closed)
    try:
        request.body  # noqa: B018
    except Exception:  # the fingerprint meets the same error and reports it as a problem
        return


#: What ``idempotency_*`` and ``get_idempotency_*`` names a view class may define: those of
#: IdempotencyMixin itself (its options and hooks), filled in below the class.
_KNOWN_NAMES: frozenset[str] = frozenset()
_NAME_PREFIXES = ("idempotency_", "get_idempotency_")


def _refuse_unknown_names(view_class: type, owner: str) -> None:
    """Refuse a misspelled option or hook, which would otherwise be ignored without a word."""
    for name in vars(view_class):
        if name.startswith(_NAME_PREFIXES) and name not in _KNOWN_NAMES:
            kind = "get_idempotency_" if name.startswith("get_") else "idempotency_"
            known = sorted(known for known in _KNOWN_NAMES if known.startswith(kind))
            raise ImproperlyConfigured(
                f"{owner}: {name!r} is not an idempotency option or hook, so it would be "
                f"ignored ({did_you_mean(name, known)})."
            )


_KNOWN_NAMES = frozenset(name for name in vars(IdempotencyMixin) if name.startswith(_NAME_PREFIXES))
# After _KNOWN_NAMES: the mark is the mixin's to set, not an option a view may override.
setattr(IdempotencyMixin, HANDLED_BY_VIEW_ATTRIBUTE, True)
