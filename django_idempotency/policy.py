"""What applies to one view: the settings, overridden per view."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest

from django_idempotency import fingerprints
from django_idempotency.conf import idempotency_settings
from django_idempotency.encryption import Encryptor, seal, unseal
from django_idempotency.options import (
    NEVER_REPLAYED_HEADERS,
    OPTIONS,
    VIEW_OPTION_NAMES,
    AnonymousMode,
    OnConflict,
    invalid_options,
    resolve_callable,
    upper_methods,
    validate_options,
)
from django_idempotency.storage.base import Storage, StoredResponse
from django_idempotency.storage.registry import get_storage
from django_idempotency.validation import SAFE_METHODS

logger = logging.getLogger(__name__)
#: Per-view options, as ``@idempotent(name=...)`` keywords and ``idempotency_<name>`` attributes.
OPTION_NAMES = VIEW_OPTION_NAMES


@dataclasses.dataclass(frozen=True)
class Policy:
    """Everything the engine needs to decide about one request."""

    storage: Storage
    header: str
    methods: frozenset[str]
    required: bool
    ttl: timedelta
    lease: timedelta
    on_conflict: OnConflict
    wait_timeout: timedelta
    retry_after: timedelta
    mismatch_status: int
    replay_headers: frozenset[str]
    max_response_size: int
    atomic: bool
    store_server_errors: bool
    fail_open: bool
    anonymous: AnonymousMode
    scope: Callable[[HttpRequest], str]
    fingerprint: Callable[[HttpRequest], str]
    encryptor: Encryptor | None

    @property
    def is_atomic(self) -> bool:
        """Whether the view's writes and the stored response commit together."""
        return self.atomic and self.storage.is_transactional

    def covers(self, method: str) -> bool:
        """Whether requests with ``method`` take a key: listed, and never a safe method."""
        upper = method.upper()
        return upper in self.methods and upper not in SAFE_METHODS

    def applies_to(self, request: HttpRequest) -> bool:
        """Whether the layer acts on ``request`` (see ``applies_to``)."""
        return applies_to(request, methods=self.methods, header=self.header, required=self.required)

    @functools.cached_property
    def fingerprint_version(self) -> str:
        """The version of the fingerprints this policy makes (``fingerprints.version_of``)."""
        return fingerprints.version_of(self.fingerprint)

    def fingerprint_of(self, request: HttpRequest) -> str:
        """Return ``request``'s fingerprint as stored: this policy's version and the digest."""
        return fingerprints.versioned(self.fingerprint_version, self.fingerprint(request))

    def is_same_request(self, stored: str, fingerprint: str, request: HttpRequest) -> bool | None:
        """Whether ``request`` is the one ``stored`` was made for; ``None`` if it cannot say.

        A record made under another fingerprint version is compared under that version,
        computed by this policy's function, the setting's, or an algorithm this release
        ships, whichever has it (``fingerprints.compare``).
        """
        return fingerprints.compare(stored, fingerprint, request, self._fingerprint_candidates())

    def _fingerprint_candidates(self) -> Iterator[Callable[[HttpRequest], str]]:
        yield self.fingerprint
        with contextlib.suppress(ImproperlyConfigured, ImportError):
            yield resolve_callable(idempotency_settings.FINGERPRINT)
        yield from fingerprints.ALGORITHMS.values()

    def sealed(self, body: bytes, *, scope: str, key: str) -> bytes:
        """Return ``body`` as it is stored for (scope, key): sealed, if an encryptor is set."""
        return seal(body, self.encryptor, scope=scope, key=key)

    def unsealed(self, response: StoredResponse, *, scope: str, key: str) -> StoredResponse:
        """Return the stored response with its body opened; ``Unreadable`` when it cannot be."""
        body = unseal(response.body, self.encryptor, scope=scope, key=key)
        return response if body is response.body else dataclasses.replace(response, body=body)

    def should_replay_header(self, name: str) -> bool:
        lowered = name.lower()
        return lowered not in NEVER_REPLAYED_HEADERS and lowered in self.replay_headers

    @classmethod
    def build(cls, overrides: Mapping[str, Any] | None = None) -> Policy:
        """Return the settings' policy with ``overrides``; ImproperlyConfigured on bad ones."""
        given = {name: value for name, value in (overrides or {}).items() if value is not None}
        if not given:
            return _settings_policy()
        key = _cache_key(given)
        policy = _BUILT.get(key) if key is not None else None
        if policy is None:
            policy = cls._from(given)
            if key is not None and len(_BUILT) < _MAX_BUILT:
                _BUILT[key] = policy
        return policy

    @classmethod
    def _from(cls, given: Mapping[str, Any]) -> Policy:
        validate_options(given, owner="idempotency options")
        fields = dict(_settings_fields())
        for name, value in given.items():
            option = OPTIONS[name]
            fields[name] = option.combine(fields[name], option.convert(value))
        source = "The storage option" if "storage" in given else "IDEMPOTENCY_STORAGE"
        fields["storage"] = get_storage(fields["storage"], source=source)
        return cls(**fields)


#: Policies built for a view's overrides, by the overrides (``_cache_key``), until a setting
#: changes: a view's options are the same on every request, so its policy is built once. At
#: most ``_MAX_BUILT``, so per-request values (a lambda made per call) cannot grow it.
_BUILT: dict[tuple[tuple[str, Any], ...], Policy] = {}
_MAX_BUILT = 1024


def _cache_key(given: Mapping[str, Any]) -> tuple[tuple[str, Any], ...] | None:
    """Return the overrides as a hashable key, or None when they cannot be one.

    A bound method (a mixin's overridden ``get_idempotency_scope``, say) is new on every
    request, so a policy with one is never kept.
    """
    items = []
    for name, value in sorted(given.items()):
        if inspect.ismethod(value):
            return None
        # The type too: 1 == True, yet required=1 is refused where required=True is not.
        frozen = tuple(value) if isinstance(value, list | tuple | set | frozenset) else value
        try:
            hash(frozen)
        except TypeError:
            return None
        items.append((name, (type(value), frozen)))
    return tuple(items)


#: The policy's fields: each is an option of ``options.OPTIONS``, read from its setting.
POLICY_FIELD_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Policy))


def applies_to(
    request: HttpRequest, *, methods: frozenset[str] | None, header: str | None, required: bool
) -> bool:
    """Whether the layer acts on ``request``: the one answer to "is this request covered?".

    It is, when its method is covered (never a safe method) and it carries a key or must
    carry one. ``None`` means the methods or the header are not known, because their
    setting is bad: then every unsafe method counts as covered and every request as keyed
    (fail closed, docs/settings.md "Bad settings").
    """
    method = (request.method or "").upper()
    if method in SAFE_METHODS or (methods is not None and method not in methods):
        return False
    return required or header is None or header in request.headers


def policy_for(request: HttpRequest, overrides: Mapping[str, Any] | None = None) -> Policy | None:
    """Return the policy for ``request``, or None when a bad setting leaves it alone.

    A bad setting or per-view value raises ``ImproperlyConfigured`` (naming it) for the
    requests the layer covers, so their view never runs; requests it does not cover (safe
    methods, unkeyed requests where keys are optional) go on as if the layer were absent,
    and the problem is logged once.
    """
    if is_disabled():
        return None
    try:
        return Policy.build(overrides)
    except ImproperlyConfigured as error:
        if _applies_despite_misconfiguration(request, overrides or {}):
            raise
        _log_misconfiguration(str(error))
        return None


def is_disabled() -> bool:
    """Whether ``IDEMPOTENCY_DISABLED`` switches the layer off (only ``True`` does)."""
    try:
        return idempotency_settings.DISABLED is True
    except ImproperlyConfigured:
        return False  # a bad value protects, as if it were not set


def _applies_despite_misconfiguration(request: HttpRequest, overrides: Mapping[str, Any]) -> bool:
    # Decide coverage from what is valid; what is not counts as covering (fail closed).
    methods: frozenset[str] | None = None
    if overrides.get("methods") is not None:
        if not invalid_options({"methods": overrides["methods"]}):
            methods = upper_methods(overrides["methods"])
    else:
        with contextlib.suppress(ImproperlyConfigured):
            methods = idempotency_settings.METHODS  # upper-cased as the table converts it
    header: str | None = None
    with contextlib.suppress(ImproperlyConfigured):
        header = idempotency_settings.HEADER
    required = True
    if isinstance(overrides.get("required"), bool):
        required = overrides["required"]
    elif overrides.get("required") is None:
        with contextlib.suppress(ImproperlyConfigured):
            required = idempotency_settings.REQUIRED
    return applies_to(request, methods=methods, header=header, required=required)


@functools.cache
def _log_misconfiguration(problem: str) -> None:
    """Log a bad setting once (until a setting changes), when it first leaves a request alone."""
    logger.error(
        "django-idempotency is misconfigured: %s Requests it covers are refused with "
        "ImproperlyConfigured until this is fixed; others go on unprotected by it.",
        problem,
    )


@functools.cache
def _settings_policy() -> Policy:
    """Return the policy of a view without overrides, built once until a setting changes."""
    fields = dict(_settings_fields())
    fields["storage"] = get_storage(fields["storage"])
    return Policy(**fields)


@functools.cache
def _settings_fields() -> dict[str, Any]:
    """Return the policy fields the settings give, read once until a setting changes.

    Every request builds a policy; reading the settings and importing the scope and
    fingerprint callables each time was a measurable part of a replay (docs/benchmarks.md).
    The storage stays a dotted path here, so a view that overrides it never instantiates it.
    """
    idempotency_settings.validate()
    return {name: idempotency_settings.value(name) for name in POLICY_FIELD_NAMES}


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("IDEMPOTENCY_") or setting in {"CACHES", "DATABASES"}:
        _settings_fields.cache_clear()
        _settings_policy.cache_clear()
        _BUILT.clear()
        _log_misconfiguration.cache_clear()
