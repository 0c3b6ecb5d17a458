"""PUT/GET/DELETE /v1/internal/users."""

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.deps import Paging, read_session
from api.writes import LedgerDep, WriteOptions, submit, write_options, write_responses
from identity import users
from identity.answers import DeleteOut, SupersededOut
from identity.keys import UserKey
from identity.pagination import Page
from identity.schemas import UserUpsert

router = APIRouter(prefix="/v1/internal/users", tags=["users"])


@router.put("/{user_id}", responses=write_responses(users.UserWriteOut | SupersededOut))
async def put_user(
    user_id: str, body: UserUpsert, into: LedgerDep, options: WriteOptions = Depends(write_options)
) -> Response:
    """Create or replace a user by the integrator's UUID."""
    return await submit(
        into, users.upsert_submission(user_id, body, options.idempotency_key), options
    )


@router.delete("/{user_id}", responses=write_responses(DeleteOut))
async def delete_user(
    user_id: str, into: LedgerDep, options: WriteOptions = Depends(write_options)
) -> Response:
    """Delete a user and, by cascade, its agents."""
    return await submit(into, users.delete_submission(user_id, options.idempotency_key), options)


@router.get("/{user_id}")
def get_user(user_id: str, session: Session = Depends(read_session)) -> users.UserOut:
    return users.get_user(session, UserKey.parse(user_id).user_id)


@router.get("")
def list_users(
    paging: Paging = Depends(), session: Session = Depends(read_session)
) -> Page[users.UserOut]:
    return users.list_users(session, limit=paging.limit, cursor=paging.cursor)
