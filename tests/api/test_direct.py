"""Routes whose arguments api/direct.py resolves answer every request as FastAPI's own
resolution does, and skip FastAPI's dependency solver only for the plain ones."""

import asyncio
from collections.abc import Iterator
from typing import Any

import fastapi.routing
import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field

from api import errors
from api.contract import JsonRoute, is_json
from api.direct import _plan
from identity.errors import InsufficientScope


class Item(BaseModel):
    name: str = Field(min_length=1)
    size: int = 0


async def allowed(request: Request) -> None:
    if request.headers.get("x-deny"):
        raise InsufficientScope("denied", required=["x"])


async def caller(request: Request) -> dict[str, int]:
    request.state.calls = getattr(request.state, "calls", 0) + 1
    return {"calls": request.state.calls}


async def wrapped(seen: dict[str, int] = Depends(caller)) -> dict[str, int]:
    return seen


def app_of(route_class: type[APIRoute]) -> FastAPI:
    """One app: a route of each shape, served by `route_class`."""
    router = APIRouter(route_class=route_class, dependencies=[Depends(allowed)])

    @router.put("/items/{item_id}")
    async def put_item(
        item_id: str,
        item: Item,
        request: Request,
        seen: dict[str, int] = Depends(caller),
        again: dict[str, int] = Depends(wrapped),
        tag: str | None = Header(None),
    ) -> Response:
        body = {"id": item_id, "item": item.model_dump(), "tag": tag, "seen": seen}
        return JSONResponse({**body, "again": again, "path": request.url.path})

    @router.put("/uncached/{item_id}")
    async def uncached(
        item_id: str,
        first: dict[str, int] = Depends(caller, use_cache=False),
        second: dict[str, int] = Depends(caller, use_cache=False),
    ) -> Response:
        return JSONResponse({"id": item_id, "calls": [first["calls"], second["calls"]]})

    @router.get("/queried/{item_id}")
    async def queried(item_id: str, limit: int = Query(5)) -> Response:
        return JSONResponse({"id": item_id, "limit": limit})

    app = FastAPI()
    errors.install(app)
    app.include_router(router)
    return app


def send(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to `app`, in process."""

    async def sent() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(sent())


@pytest.fixture
def solver_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many times FastAPI's solver ran, once for each request that reached it."""
    calls: list[int] = []
    solve = fastapi.routing.solve_dependencies  # type: ignore[attr-defined]

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    yield calls


JSON = {"content-type": "application/json"}
REQUESTS: dict[str, tuple[str, str, bytes, dict[str, str], bool]] = {
    # name: (method, path, body, headers, whether it is plain)
    "valid": ("PUT", "/items/a1", b'{"name": "x", "size": 2}', {**JSON, "tag": "t"}, True),
    "no tag": ("PUT", "/items/a1", b'{"name": "x"}', JSON, True),
    "json subtype": (
        "PUT",
        "/items/a1",
        b'{"name": "x"}',
        {"content-type": "application/x+json"},
        True,
    ),
    "denied": ("PUT", "/items/a1", b'{"name": "x"}', {**JSON, "x-deny": "1"}, True),
    "invalid field": ("PUT", "/items/a1", b'{"name": ""}', JSON, False),
    "wrong type": ("PUT", "/items/a1", b'{"name": "x", "size": "big"}', JSON, False),
    "not an object": ("PUT", "/items/a1", b"[1, 2]", JSON, False),
    "null": ("PUT", "/items/a1", b"null", JSON, False),
    "broken json": ("PUT", "/items/a1", b'{"name": ', JSON, False),
    "empty body": ("PUT", "/items/a1", b"", JSON, False),
    "denied and invalid": ("PUT", "/items/a1", b"{}", {**JSON, "x-deny": "1"}, True),
    "query route": ("GET", "/queried/q1?limit=7", b"", {}, False),
    "uncached dependency": ("PUT", "/uncached/u1", b"", {}, False),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_a_request_is_answered_as_fastapis_resolution_answers_it(
    name: str, solver_calls: list[int]
) -> None:
    method, path, body, headers, plain = REQUESTS[name]
    expected = send(app_of(APIRoute), method, path, content=body, headers=headers)
    by_framework = len(solver_calls)
    answered = send(app_of(JsonRoute), method, path, content=body, headers=headers)
    assert (answered.status_code, answered.json()) == (expected.status_code, expected.json())
    assert len(solver_calls) - by_framework == (0 if plain else by_framework)


def test_a_plain_request_calls_a_dependency_named_twice_once() -> None:
    answered = send(app_of(JsonRoute), "PUT", "/items/a1", json={"name": "x"}).json()
    assert answered["seen"] == answered["again"] == {"calls": 1}


def test_dependency_overrides_are_left_to_fastapi(solver_calls: list[int]) -> None:
    app = app_of(JsonRoute)

    async def never(request: Request) -> None:
        raise InsufficientScope("overridden", required=["y"])

    app.dependency_overrides[allowed] = never
    answered = send(app, "PUT", "/items/a1", json={"name": "x"})
    assert answered.status_code == 403 and solver_calls == [1]


@pytest.mark.parametrize(
    ("module", "route", "method"),
    [
        ("api.routes.users", "upsertUser", "PUT"),
        ("api.routes.users", "deleteUser", "DELETE"),
        ("api.routes.agents", "upsertAgent", "PUT"),
        ("api.routes.graphs", "updateAgentGraph", "POST"),
        ("api.routes.graphs", "patchAgentGraph", "PATCH"),
        ("api.scim.users", "/scim/v2/Users", "POST"),
        ("api.scim.users", "/scim/v2/Users/{resource_id}", "PATCH"),
        ("api.scim.agents", "/scim/v2/Agents/{resource_id}", "PUT"),
    ],
)
def test_the_write_routes_are_of_the_plain_shape(module: str, route: str, method: str) -> None:
    """A change of a write route's parameters that would hand it back to FastAPI's solver
    (a query parameter, a sync dependency) shows here, not only as a slower benchmark."""
    imported = __import__(module, fromlist=["*"])
    routers = [value for value in vars(imported).values() if isinstance(value, APIRouter)]
    found = [
        served
        for router in routers
        for served in router.routes
        if isinstance(served, APIRoute)
        and method in (served.methods or ())
        and route in (served.operation_id, served.path)
    ]
    assert len(found) == 1, (module, route, method)
    assert isinstance(found[0], JsonRoute) and _plan(found[0], is_json) is not None
