"""/scim/v2/Agents: the RFC 7644 operations on draft-abbey-scim-agent-extension's Agent, each
write a ledger job on the agent's key."""

from fastapi import APIRouter

from api.contract import JsonRoute, scope
from api.scim.changes import add_writes
from api.scim.reads import Served, add_reads
from identity.scim import queries
from identity.scim.agents import answered, to_scim
from identity.scim.requests import agent_submission

router = APIRouter(
    prefix="/scim/v2/Agents",
    tags=["scim"],
    dependencies=[scope("scim")],
    include_in_schema=False,
    route_class=JsonRoute,
)
SERVED = Served(queries.get_agent, queries.find_agents, to_scim, answered)
add_reads(router, SERVED)
add_writes(router, agent_submission, answered, frozenset({"POST", "PUT", "PATCH", "DELETE"}))
