"""The reads every resource type answers alike: one resource by id (`If-None-Match`,
`attributes` / `excludedAttributes`), a filtered list (`GET` with a query) and the same list
asked for with a SearchRequest body (`POST .search`), answered as a ListResponse."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from scim2_models import Resource, ResponseParameters
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import PRINCIPAL, Principal
from api.deps import read_session
from api.scim.answers import ScimResponse, base_url, listed
from api.scim.bodies import json_body, paging, query_parameters, response_parameters
from identity.scim.errors import InvalidFilter
from identity.scim.queries import Found
from identity.scim.resources import dump, etag, if_match_holds


@dataclass(frozen=True)
class Served:
    """How one resource type is read: a row by id, a page of the rows a filter matches (from
    the startIndex-th, count of them), each as an integrator sees them, and a row as its SCIM
    resource (at a base URL), and as its SCIM JSON in full."""

    get: Callable[[Session, str, str | None], Any]
    find: Callable[[Session, str | None, int, int, str | None], Found]
    to_scim: Callable[[Any, str], Resource[Any]]
    answered: Callable[[Any, str], dict[str, Any]]

    def render(
        self, row: Any, base: str, parameters: ResponseParameters[Any] | None
    ) -> dict[str, Any]:
        """A row as answered, with the attributes `parameters` ask for (all when None)."""
        if parameters is None:
            return self.answered(row, base)
        return dump(self.to_scim(row, base), parameters)


def sees(request: Request) -> str | None:
    """The integrator whose identities the request's token sees; None for an admin's."""
    principal: Principal = request.scope[PRINCIPAL]
    return principal.actor.sees


def list_query(
    filter: str | None = Query(None, max_length=4096),
    start_index: str | None = Query(None, alias="startIndex", max_length=20),
    count: str | None = Query(None, max_length=20),
    attributes: str | None = Query(None, max_length=4096),
    excluded_attributes: str | None = Query(None, alias="excludedAttributes", max_length=4096),
) -> dict[str, Any]:
    """A list's query parameters, named as a SearchRequest body names them."""
    return {
        "filter": filter,
        "startIndex": start_index,
        "count": count,
        "attributes": attributes,
        "excludedAttributes": excluded_attributes,
    }


def page_answer(
    request: Request, session: Session, query: dict[str, Any], served: Served
) -> Response:
    """The ListResponse of a list or .search `query`."""
    start, count = paging(query.get("startIndex"), query.get("count"))
    parameters = response_parameters(query.get("attributes"), query.get("excludedAttributes"))
    found = served.find(session, query.get("filter"), start, count, sees(request))
    base = base_url(request)
    resources = [served.render(row, base, parameters) for row in found.rows]
    return listed(resources, found.total, start)


def search_all(
    request: Request, session: Session, query: dict[str, Any], types: list[Served]
) -> Response:
    """The ListResponse of a .search at the root: the resources of every type the filter
    applies to, each type's in id order, the types in the order given. A type whose schema
    lacks an attribute the filter names has no matches; invalidFilter if no type has them."""
    start, count = paging(query.get("startIndex"), query.get("count"))
    parameters = response_parameters(query.get("attributes"), query.get("excludedAttributes"))
    base, expression, owner = base_url(request), query.get("filter"), sees(request)
    total, resources, refused = 0, list[dict[str, Any]](), list[InvalidFilter]()
    for served in types:
        try:
            here = served.find(session, expression, 1, 0, owner).total
        except InvalidFilter as error:
            refused.append(error)
            continue
        skip, wanted = max(start - 1 - total, 0), count - len(resources)
        if wanted > 0 and skip < here:
            rows = served.find(session, expression, skip + 1, wanted, owner).rows
            resources += [served.render(row, base, parameters) for row in rows]
        total += here
    if len(refused) == len(types):
        raise refused[0]
    return listed(resources, total, start)


def add_reads(router: APIRouter, served: Served) -> None:
    """Add to `router` the reads of the resource type it serves."""

    @router.get("/{resource_id}")
    def get_one(
        resource_id: str,
        request: Request,
        if_none_match: str | None = Header(None),
        parameters: ResponseParameters[Any] | None = Depends(query_parameters),
        session: Session = Depends(read_session),
    ) -> Response:
        """The resource; 304 when If-None-Match names its version."""
        row = served.get(session, resource_id, sees(request))
        headers = {"ETag": etag(row.version)}
        if if_none_match is not None and if_match_holds(if_none_match, row.version):
            return Response(status_code=304, headers=headers)
        body = served.render(row, base_url(request), parameters)
        return ScimResponse(body, headers=headers)

    @router.get("")
    def list_all(
        request: Request,
        query: dict[str, Any] = Depends(list_query),
        session: Session = Depends(read_session),
    ) -> Response:
        """A filtered page of the resources, with the total that match."""
        return page_answer(request, session, query, served)

    @router.post("/.search")
    async def search(request: Request, session: Session = Depends(read_session)) -> Response:
        """The same list, asked for with a SearchRequest body."""
        query = await json_body(request)
        return await run_in_threadpool(page_answer, request, session, query, served)
