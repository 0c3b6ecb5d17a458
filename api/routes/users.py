"""PUT/GET/DELETE /v1/internal/users."""

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.auth import PrincipalDep
from api.contract import JsonRoute, answers, scope, write_answers
from api.deps import Paging, read_session
from api.params import UserBody, UserId
from api.writes import LedgerDep, WriteOptions, submit, write_options
from identity import users
from identity.answers import DeleteOut, SupersededOut
from identity.errors import InvalidCursor, InvalidUserId, SlugTaken, UserNotFound, ValidationFailed
from identity.keys import UserKey
from identity.pagination import Page

router = APIRouter(prefix="/v1/internal/users", tags=["users"], route_class=JsonRoute)


@router.put(
    "/{user_id}",
    operation_id="upsertUser",
    dependencies=[scope("users:write")],
    responses=write_answers(users.UserWriteOut | SupersededOut, InvalidUserId, SlugTaken),
)
async def put_user(
    user_id: UserId,
    body: UserBody,
    into: LedgerDep,
    options: WriteOptions = Depends(write_options),
) -> Response:
    """Create or replace a user by the integrator's UUID."""
    return await submit(
        into, users.upsert_submission(user_id, body, options.idempotency_key), options
    )


@router.delete(
    "/{user_id}",
    operation_id="deleteUser",
    dependencies=[scope("users:write")],
    responses=write_answers(DeleteOut, InvalidUserId, body=False),
)
async def delete_user(
    user_id: UserId, into: LedgerDep, options: WriteOptions = Depends(write_options)
) -> Response:
    """Delete a user and, by cascade, its agents."""
    return await submit(into, users.delete_submission(user_id, options.idempotency_key), options)


@router.get(
    "/{user_id}",
    operation_id="getUser",
    dependencies=[scope("read")],
    responses=answers(InvalidUserId, UserNotFound),
)
def get_user(
    user_id: UserId, principal: PrincipalDep, session: Session = Depends(read_session)
) -> users.UserOut:
    """The user."""
    user = UserKey.parse(user_id).user_id
    return users.get_user(session, user, sees=principal.actor.sees)


@router.get(
    "",
    operation_id="listUsers",
    dependencies=[scope("read")],
    responses=answers(InvalidCursor, ValidationFailed),
)
def list_users(
    principal: PrincipalDep, paging: Paging = Depends(), session: Session = Depends(read_session)
) -> Page[users.UserOut]:
    """A page of users, ordered by id."""
    return users.list_users(
        session, limit=paging.limit, cursor=paging.cursor, sees=principal.actor.sees
    )
