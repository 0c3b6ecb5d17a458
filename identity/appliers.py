"""Which function applies each kind of job."""

from sqlalchemy.orm import Session

from identity.agents import delete_agent, upsert_agent, upsert_agents
from identity.graph.service import update_agent_graph
from identity.ledger.jobs import Applied, Applier, BatchApplier, PendingJob
from identity.node_types import upsert_node_type
from identity.settings import get_settings
from identity.users import delete_user, upsert_user


def _update_graph(session: Session, job: PendingJob) -> Applied:
    return update_agent_graph(session, job, max_nodes=get_settings().max_nodes)


APPLIERS: dict[str, Applier] = {
    "user.upsert": upsert_user,
    "user.delete": delete_user,
    "agent.upsert": upsert_agent,
    "agent.delete": delete_agent,
    "agent.update": _update_graph,
    "node_type.upsert": upsert_node_type,
}

# Kinds whose jobs of distinct keys can be applied together, far cheaper than one by one.
BATCH_APPLIERS: dict[str, BatchApplier] = {"agent.upsert": upsert_agents}
