"""A route's arguments resolved without FastAPI's dependency solver, in the plain case.

FastAPI resolves an endpoint's arguments on every request with `solve_dependencies`, whose
generality (caches, scopes, overrides, every kind of parameter) cost a respond-async write
about 65 us of the API's CPU, a tenth of all the write costs it. Most routes that take writes
need only three kinds of argument: a path parameter taken as it is, a JSON body validated as
one model, and dependencies that read nothing but the request (its token's scope, the ledger,
the write headers). For a route of that shape, `direct` resolves them itself. A request that is
not the plain case (no JSON body, a body that does not validate, dependency overrides) goes to
FastAPI's own handler, so every refusal is FastAPI's, word for word (the dependencies run once
more then: those of this shape only read the request). Routes of any other shape are left to
FastAPI entirely.
"""

import inspect
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


@dataclass(frozen=True)
class _Call:
    """A dependency, or the endpoint: its function, the dependencies it takes (each with its
    argument's name, None for a route's own `dependencies=`), in FastAPI's order, and the name
    of its request argument, if it takes one."""

    call: Callable[..., Awaitable[Any]]
    needs: tuple[tuple[str | None, "_Call"], ...]
    request: str | None

    async def arguments(self, request: Request, done: dict[Any, Any]) -> dict[str, Any]:
        """Its arguments; `done` holds the request's dependencies called so far (FastAPI calls
        one named twice once)."""
        values: dict[str, Any] = {}
        for name, need in self.needs:
            if need.call in done:
                value = done[need.call]
            else:
                value = done[need.call] = await need.call(**await need.arguments(request, done))
            if name is not None:
                values[name] = value
        if self.request is not None:
            values[self.request] = request
        return values


@dataclass(frozen=True)
class _Plan:
    """How to call an endpoint: its dependencies, then its path, header and body arguments."""

    endpoint: _Call
    path: tuple[tuple[str, str], ...]  # (argument, path parameter)
    headers: tuple[tuple[str, str], ...]  # (argument, header name)
    body: tuple[str, type[BaseModel]] | None
    is_json: Callable[[str | None], bool]

    async def arguments(self, request: Request) -> dict[str, Any] | None:
        """The endpoint's arguments; None if the request is not the plain case."""
        values = await self.endpoint.arguments(request, {})
        for name, key in self.path:
            values[name] = request.path_params[key]
        for name, header in self.headers:
            values[name] = request.headers.get(header)
        if self.body is not None:
            body = await self._body(request, self.body[1])
            if body is None:
                return None
            values[self.body[0]] = body
        return values

    async def _body(self, request: Request, model: type[BaseModel]) -> BaseModel | None:
        if not self.is_json(request.headers.get("content-type")):
            return None
        data = await request.body()
        try:
            return model.model_validate(json.loads(data)) if data else None
        except ValueError:  # not JSON, or not valid (pydantic's ValidationError is one)
            return None


def direct(route: APIRoute, handler: Handler, is_json: Callable[[str | None], bool]) -> Handler:
    """`handler` (FastAPI's, for `route`) with its plain requests' arguments resolved here, if
    `route` has a shape this module resolves; else `handler` itself."""
    plan = _plan(route, is_json)
    if plan is None:
        return handler
    endpoint = plan.endpoint.call

    async def resolved(request: Request) -> Response:
        if request.app.dependency_overrides:
            return await handler(request)
        values = await plan.arguments(request)
        if values is None:
            return await handler(request)
        response: Response = await endpoint(**values)
        return response

    return resolved


def _plan(route: APIRoute, is_json: Callable[[str | None], bool]) -> _Plan | None:
    found = route.dependant
    returns = inspect.signature(route.endpoint).return_annotation
    if not (
        inspect.isclass(returns)
        and issubclass(returns, Response)
        and _only_plain_parameters(found)
        and len(found.body_params) <= 1
    ):
        return None
    endpoint = _call(found)
    if endpoint is None:
        return None
    body: tuple[str, type[BaseModel]] | None = None
    if found.body_params:
        field = found.body_params[0]
        model = field.field_info.annotation
        if not (inspect.isclass(model) and issubclass(model, BaseModel)):
            return None
        if route._embed_body_fields or field.field_info.metadata:
            return None
        body = (field.name, model)
    return _Plan(
        endpoint,
        tuple((field.name, field.alias) for field in found.path_params),
        tuple((field.name, field.alias) for field in found.header_params),
        body,
        is_json,
    )


def _call(found: Dependant) -> _Call | None:
    """How to call `found`'s function, if it is a coroutine and its dependencies are of the
    plain shape; else None."""
    call = found.call
    if call is None:
        return None
    function = call if inspect.isroutine(call) else type(call).__call__  # an instance's
    if not inspect.iscoroutinefunction(function):
        return None
    needs = []
    for dependency in found.dependencies:
        need = _call(dependency)
        # A dependency of the request alone (and of other such dependencies), called once per
        # request; one declared `use_cache=False` is called anew each time it is named.
        if need is None or not _of_the_request_alone(dependency) or not dependency.use_cache:
            return None
        needs.append((dependency.name, need))
    return _Call(call, tuple(needs), found.request_param_name)


def _only_plain_parameters(found: Dependant) -> bool:
    """No query or cookie parameters, nothing but the request among FastAPI's own objects, and
    path and header parameters as text with no checks of their own."""
    return (
        not (found.query_params or found.cookie_params)
        and _no_framework_objects(found)
        and all(_is_text(field, required=True) for field in found.path_params)
        and all(_is_text(field, required=False) for field in found.header_params)
    )


def _of_the_request_alone(found: Dependant) -> bool:
    """No parameters of its own but the request."""
    own = (found.path_params, found.query_params, found.header_params, found.cookie_params)
    return not (any(own) or found.body_params) and _no_framework_objects(found)


def _no_framework_objects(found: Dependant) -> bool:
    """None of FastAPI's own objects among its parameters but the request."""
    return (
        found.websocket_param_name is None
        and found.http_connection_param_name is None
        and found.response_param_name is None
        and found.background_tasks_param_name is None
        and found.security_scopes_param_name is None
    )


def _is_text(field: Any, *, required: bool) -> bool:
    """A parameter as text, with no checks or aliases of its own (a header: optional)."""
    info = field.field_info
    if info.metadata or info.validation_alias is not None:
        return False
    if required:
        return bool(info.annotation is str and info.is_required())
    return bool(info.annotation == str | None and info.default is None)
