"""/scim/v2/Users: the RFC 7644 operations on users, each write a ledger job on the user's
key."""

from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError
from scim2_models import Context, ResponseParameters, SCIMException
from sqlalchemy.orm import Session

from api.contract import scope
from api.deps import read_session
from api.scim.answers import LIST_SCHEMA, ScimResponse, base_url, job_answer
from api.scim.bodies import (
    json_body,
    paging,
    query_parameters,
    response_parameters,
    scim_write_options,
)
from api.writes import LedgerDep, WriteOptions, record
from identity import users as rest_users
from identity.keys import UserKey
from identity.scim import errors, queries
from identity.scim import writes as scim_writes
from identity.scim.users import ScimUser, dump, etag, fields_of, if_match_holds, to_scim

router = APIRouter(
    prefix="/scim/v2/Users",
    tags=["scim"],
    dependencies=[scope("scim")],
    include_in_schema=False,
)
# Microsoft Entra's User-Agent, or a PATCH with capitalised ops ("Replace"), which only Entra
# sends: their PATCH is read as Entra means it (see docs/scim.md, "Provider quirks").
_ENTRA_AGENTS = ("azure active directory", "microsoft entra", "aad scim")


def _user(body: dict[str, Any], context: Context) -> ScimUser:
    try:
        return ScimUser.model_validate(body, scim_ctx=context)
    except ValidationError as exc:
        raise errors.from_validation(exc.errors()) from None
    except SCIMException as exc:
        raise errors.from_exception(exc) from None


def _renderer(request: Request, parameters: ResponseParameters[Any] | None = None) -> Any:
    base = base_url(request)
    return lambda result: dump(to_scim(result, base), parameters)


@router.post("")
async def create_user(
    request: Request, into: LedgerDep, options: WriteOptions = Depends(scim_write_options)
) -> Response:
    """Create a user: 201 with its Location and ETag."""
    user = _user(await json_body(request), Context.RESOURCE_CREATION_REQUEST)
    sub = scim_writes.create_submission(fields_of(user), options.idempotency_key)
    return job_answer(await record(into, sub, options), _renderer(request), created=True)


@router.get("/{user_id}")
def get_user(
    user_id: str,
    request: Request,
    if_none_match: str | None = Header(None),
    parameters: ResponseParameters[Any] | None = Depends(query_parameters),
    session: Session = Depends(read_session),
) -> Response:
    """The user; 304 when If-None-Match names its version."""
    row = queries.get_user(session, user_id)
    headers = {"ETag": etag(row.version)}
    if if_none_match is not None and if_match_holds(if_none_match, row.version):
        return Response(status_code=304, headers=headers)
    body = dump(to_scim(row, base_url(request)), parameters)
    return ScimResponse(body, headers=headers)


def _list(request: Request, session: Session, query: dict[str, Any]) -> Response:
    start, count = paging(query.get("startIndex"), query.get("count"))
    parameters = response_parameters(query.get("attributes"), query.get("excludedAttributes"))
    found = queries.find_users(session, query.get("filter"), start_index=start, count=count)
    base = base_url(request)
    resources = [dump(to_scim(row, base), parameters) for row in found.rows]
    body = {
        "schemas": [LIST_SCHEMA],
        "totalResults": found.total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
    return ScimResponse(body)


@router.get("")
def list_users(
    request: Request,
    filter: str | None = Query(None, max_length=4096),
    start_index: str | None = Query(None, alias="startIndex", max_length=20),
    count: str | None = Query(None, max_length=20),
    attributes: str | None = Query(None, max_length=4096),
    excluded_attributes: str | None = Query(None, alias="excludedAttributes", max_length=4096),
    session: Session = Depends(read_session),
) -> Response:
    """A filtered page of users, with the total that match."""
    query = {
        "filter": filter,
        "startIndex": start_index,
        "count": count,
        "attributes": attributes,
        "excludedAttributes": excluded_attributes,
    }
    return _list(request, session, query)


@router.post("/.search")
async def search_users(request: Request, session: Session = Depends(read_session)) -> Response:
    """The same list, asked for with a SearchRequest body."""
    body = await json_body(request)
    return _list(request, session, body)


def _key(user_id: str) -> UserKey:
    return UserKey(queries.parse_id(user_id))


@router.put("/{user_id}")
async def replace_user(
    user_id: str,
    request: Request,
    into: LedgerDep,
    if_match: str | None = Header(None),
    options: WriteOptions = Depends(scim_write_options),
) -> Response:
    """Replace a user's attributes; 404 when it does not exist (a PUT never creates)."""
    key = _key(user_id)
    user = _user(await json_body(request), Context.RESOURCE_REPLACEMENT_REQUEST)
    sub = scim_writes.replace_submission(key, fields_of(user), if_match, options.idempotency_key)
    return job_answer(await record(into, sub, options), _renderer(request))


def _dialect(request: Request, body: dict[str, Any]) -> scim_writes.Dialect:
    agent = request.headers.get("user-agent", "").lower()
    operations = body.get("Operations")
    capitalised = isinstance(operations, list) and any(
        isinstance(op, dict) and str(op.get("op", ""))[:1].isupper() for op in operations
    )
    return "entra" if capitalised or any(name in agent for name in _ENTRA_AGENTS) else "strict"


@router.patch("/{user_id}")
async def patch_user(
    user_id: str,
    request: Request,
    into: LedgerDep,
    if_match: str | None = Header(None),
    options: WriteOptions = Depends(scim_write_options),
) -> Response:
    """Apply PATCH operations, in order, to the user as it is when the job's turn comes."""
    key = _key(user_id)
    body = await json_body(request)
    dialect = _dialect(request, body)
    patch = scim_writes.parse_patch(body, dialect)
    operations = [
        op.model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST) for op in patch.operations or []
    ]
    sub = scim_writes.patch_submission(key, operations, dialect, if_match, options.idempotency_key)
    return job_answer(await record(into, sub, options), _renderer(request))


@router.delete("/{user_id}")
async def delete_user(
    user_id: str,
    into: LedgerDep,
    if_match: str | None = Header(None),
    options: WriteOptions = Depends(scim_write_options),
    session: Session = Depends(read_session),
) -> Response:
    """Delete a user (and its agents): 204; 404 when there is none."""
    key = _key(user_id)
    row = queries.get_user(session, user_id)
    session.close()
    if not if_match_holds(if_match, row.version):
        raise errors.PreconditionFailed("If-Match names another version of this user")
    job = await record(
        into, rest_users.delete_submission(str(key.user_id), options.idempotency_key), options
    )
    if job["status"] == "applied" and job["result"].get("outcome") == "unchanged":
        raise errors.ScimNotFound("no user has this id", id=user_id)
    if job["status"] == "applied":
        return Response(status_code=204, headers={"Idmirror-Job-Id": job["id"]})
    return job_answer(job, dict)
