"""Which function applies each kind of job."""

from identity.agents import delete_agent, upsert_agent
from identity.ledger import Applier
from identity.users import delete_user, upsert_user

APPLIERS: dict[str, Applier] = {
    "user.upsert": upsert_user,
    "user.delete": delete_user,
    "agent.upsert": upsert_agent,
    "agent.delete": delete_agent,
}
