"""``IdempotencyMiddleware``: idempotency keys for plain Django views, sync and async."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from django_idempotency import engine
from django_idempotency.exceptions import IdempotencyError
from django_idempotency.handling import get_view_options, is_handled_by_middleware
from django_idempotency.policy import policy_for
from django_idempotency.responses import problem_response

_EXECUTION_ATTRIBUTE = "_idempotency_execution"


class IdempotencyMiddleware:
    """Claim the key before the view runs and store or release its outcome after."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        try:
            response = self.get_response(request)
        except BaseException:
            # Django turns a view's Exception into a response before it gets here; this is
            # for a BaseException, such as the SystemExit of gunicorn's worker timeout.
            self._abort(request)
            raise
        return self._finish(request, response)  # type: ignore[arg-type]

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            response = await self.get_response(request)  # type: ignore[misc]
        except BaseException:
            await sync_to_async(self._abort, thread_sensitive=True)(request)
            raise
        if getattr(request, _EXECUTION_ATTRIBUTE, None) is None:
            return response  # type: ignore[no-any-return]
        return await sync_to_async(self._finish, thread_sensitive=True)(request, response)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        if not is_handled_by_middleware(view_func):
            return None
        policy = policy_for(request, get_view_options(view_func))
        if policy is None:
            return None
        try:
            decision = engine.begin(request, policy)
            if isinstance(decision, engine.Execution):
                decision.enter()  # a store failure here frees the key and raises: 503
        except IdempotencyError as error:
            return problem_response(error)
        if isinstance(decision, engine.Execution):
            setattr(request, _EXECUTION_ATTRIBUTE, decision)
            return None
        return decision

    def _finish(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        execution: engine.Execution | None = getattr(request, _EXECUTION_ATTRIBUTE, None)
        if execution is None:
            return response
        setattr(request, _EXECUTION_ATTRIBUTE, None)
        try:
            return execution.finish(response)
        except IdempotencyError as error:
            return problem_response(error)

    def _abort(self, request: HttpRequest) -> None:
        execution: engine.Execution | None = getattr(request, _EXECUTION_ATTRIBUTE, None)
        if execution is not None:
            setattr(request, _EXECUTION_ATTRIBUTE, None)
            execution.abort()
