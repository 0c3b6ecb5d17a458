"""/v1/admin/integrators, /v1/admin/tokens, /v1/admin/users/{id}/owner and /v1/audit: what an
admin token (the `admin` scope) manages and reads."""

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.openapi.models import Example
from fastapi.responses import Response
from pydantic import AwareDatetime
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.auth import Principal
from api.contract import Answers, ErrorEnvelope, JsonRoute, answers, scope
from api.deps import Paging, read_session
from api.writes import origin_of
from identity import audit as audit_log
from identity import integrators, tokens
from identity.db import transaction
from identity.errors import (
    IntegratorExists,
    IntegratorNotFound,
    InvalidCursor,
    InvalidUserId,
    TokenNotFound,
    UserNotFound,
    ValidationFailed,
)
from identity.integrators import IntegratorOut, RateLimit
from identity.keys import UserKey
from identity.pagination import Page
from identity.settings import get_settings

router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=JsonRoute)
audit = APIRouter(prefix="/v1/audit", tags=["admin"], route_class=JsonRoute)
ADMIN = scope("admin")
T = TypeVar("T")
IntegratorBody = Annotated[
    integrators.IntegratorCreate,
    Body(
        openapi_examples={
            "crm": Example(
                summary="An integrator with a rate limit of its own",
                value={
                    "name": "crm",
                    "display_name": "CRM sync",
                    "rate_limit": {"per_second": 50, "burst": 100},
                },
            )
        }
    ),
]
IntegratorChanges = Annotated[
    integrators.IntegratorUpdate,
    Body(
        openapi_examples={
            "disable": Example(summary="Refuse its tokens", value={"disabled": True}),
            "limit": Example(
                summary="A new rate limit", value={"rate_limit": {"per_second": 10, "burst": 20}}
            ),
        }
    ),
]
TokenBody = Annotated[
    tokens.TokenCreate,
    Body(
        openapi_examples={
            "writer": Example(
                summary="A token that writes users and agents and reads them back",
                value={
                    "integrator": "crm",
                    "scopes": ["users:write", "agents:write", "read", "jobs:read"],
                    "name": "crm prod",
                    "expires_at": "2030-01-01T00:00:00Z",
                },
            )
        }
    ),
]
OwnerBody = Annotated[
    integrators.OwnerMove,
    Body(openapi_examples={"give": Example(summary="To crm", value={"integrator": "crm"})}),
]
# A JSON body the framework cannot even decode (not UTF-8) is answered 400 http_error.
UNREADABLE: Answers = {
    400: {"model": ErrorEnvelope, "description": "Error: `http_error` (a body not UTF-8)"}
}


def _default_rate() -> RateLimit:
    settings = get_settings()
    return RateLimit(per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst)


def _in_transaction(work: Callable[[Session], T]) -> T:
    with transaction() as session:
        return work(session)


async def _admin_action(work: Callable[[Session], T]) -> T:
    """Run an admin action (which audits itself) in a transaction of its own."""
    return await run_in_threadpool(_in_transaction, work)


@router.post(
    "/integrators",
    status_code=201,
    operation_id="createIntegrator",
    responses=answers(IntegratorExists, ValidationFailed) | UNREADABLE,
)
async def create_integrator(
    body: IntegratorBody, request: Request, principal: Principal = ADMIN
) -> IntegratorOut:
    origin = origin_of(request)
    return await _admin_action(
        lambda s: integrators.create_integrator(s, body, principal.actor, origin, _default_rate())
    )


@router.get(
    "/integrators",
    operation_id="listIntegrators",
    dependencies=[ADMIN],
    responses=answers(InvalidCursor, ValidationFailed),
)
def list_integrators(
    paging: Paging = Depends(), session: Session = Depends(read_session)
) -> Page[IntegratorOut]:
    return integrators.list_integrators(
        session, limit=paging.limit, cursor=paging.cursor, default=_default_rate()
    )


@router.get(
    "/integrators/{name}",
    operation_id="getIntegrator",
    dependencies=[ADMIN],
    responses=answers(IntegratorNotFound),
)
def get_integrator(name: str, session: Session = Depends(read_session)) -> IntegratorOut:
    return integrators.get_integrator(session, name, _default_rate())


@router.patch(
    "/integrators/{name}",
    operation_id="updateIntegrator",
    responses=answers(IntegratorNotFound, ValidationFailed) | UNREADABLE,
)
async def update_integrator(
    name: str, body: IntegratorChanges, request: Request, principal: Principal = ADMIN
) -> IntegratorOut:
    """Change an integrator: `disabled: true` refuses its tokens in every API process at once."""
    origin = origin_of(request)
    return await _admin_action(
        lambda s: integrators.update_integrator(
            s, name, body, principal.actor, origin, _default_rate()
        )
    )


@router.post(
    "/tokens",
    status_code=201,
    operation_id="createToken",
    responses=answers(IntegratorNotFound, ValidationFailed) | UNREADABLE,
)
async def create_token(
    body: TokenBody, request: Request, principal: Principal = ADMIN
) -> tokens.TokenCreatedOut:
    """A new token; its secret is in this answer and nowhere else."""
    origin = origin_of(request)
    now = datetime.now(UTC)
    return await _admin_action(lambda s: tokens.create_token(s, body, principal.actor, origin, now))


@router.get(
    "/tokens",
    operation_id="listTokens",
    dependencies=[ADMIN],
    responses=answers(InvalidCursor, ValidationFailed),
)
def list_tokens(
    integrator: str | None = Query(None, max_length=64),
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[tokens.TokenOut]:
    return tokens.list_tokens(
        session, limit=paging.limit, cursor=paging.cursor, integrator=integrator
    )


@router.delete(
    "/tokens/{token_id}",
    status_code=204,
    operation_id="revokeToken",
    responses=answers(TokenNotFound),
)
async def revoke_token(token_id: str, request: Request, principal: Principal = ADMIN) -> Response:
    """Revoke a token: every API process refuses it from now on."""
    try:
        parsed = uuid.UUID(token_id)
    except ValueError:
        raise TokenNotFound("no token has this id", token_id=token_id) from None
    origin = origin_of(request)
    await _admin_action(lambda s: tokens.revoke_token(s, parsed, principal.actor, origin))
    return Response(status_code=204)


@router.put(
    "/users/{user_id}/owner",
    operation_id="moveUser",
    responses=answers(InvalidUserId, UserNotFound, IntegratorNotFound, ValidationFailed)
    | UNREADABLE,
)
async def move_user(
    user_id: str, body: OwnerBody, request: Request, principal: Principal = ADMIN
) -> integrators.OwnerOut:
    """Give a user, with its agents and graphs, to another integrator (null: to none)."""
    key = UserKey.parse(user_id)
    origin = origin_of(request)
    return await _admin_action(
        lambda s: integrators.move_user(s, key.user_id, body, principal.actor, origin)
    )


@audit.get(
    "",
    operation_id="listAudit",
    dependencies=[ADMIN],
    responses=answers(InvalidCursor, ValidationFailed),
)
def list_audit(
    integrator: str | None = Query(None, max_length=64),
    key: str | None = Query(None, max_length=300),
    token_id: uuid.UUID | None = None,
    since: AwareDatetime | None = None,
    paging: Paging = Depends(),
    session: Session = Depends(read_session),
) -> Page[audit_log.AuditEntryOut]:
    """The audit trail, newest first."""
    return audit_log.list_audit(
        session,
        limit=paging.limit,
        cursor=paging.cursor,
        integrator=integrator,
        key=key,
        token_id=token_id,
        since=since,
    )
