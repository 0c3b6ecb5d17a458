"""Every router of /scim/v2, in the order the app includes them."""

from api.scim import agents, bulk, discovery, users

SCIM_ROUTERS = [users.router, agents.router, bulk.router, discovery.router]
