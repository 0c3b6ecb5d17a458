"""Every router of /scim/v2, in the order the app includes them."""

from api.scim import agents, bulk, discovery, search, users

SCIM_ROUTERS = [users.router, agents.router, bulk.router, search.router, discovery.router]
