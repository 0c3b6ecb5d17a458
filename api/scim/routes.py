"""Every router of /scim/v2, in the order the app includes them; the first, /Users, which
providers call most, the app includes among the /v1 writes (api/app.py)."""

from api.scim import agents, bulk, discovery, search, users

SCIM_ROUTERS = [users.router, agents.router, bulk.router, search.router, discovery.router]
