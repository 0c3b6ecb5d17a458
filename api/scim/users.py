"""/scim/v2/Users: the RFC 7644 operations on users, each write a ledger job on the user's
key."""

from fastapi import APIRouter

from api.contract import JsonRoute, scope
from api.scim.changes import add_writes
from api.scim.reads import Served, add_reads
from identity.scim import queries
from identity.scim.requests import user_submission
from identity.scim.users import answered, to_scim

router = APIRouter(
    prefix="/scim/v2/Users",
    tags=["scim"],
    dependencies=[scope("scim")],
    include_in_schema=False,
    route_class=JsonRoute,
)
SERVED = Served(queries.get_user, queries.find_users, to_scim, answered)
add_reads(router, SERVED)
add_writes(router, user_submission, answered, frozenset({"DELETE"}))
