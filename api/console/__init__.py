"""The operator console at /console: server-rendered pages over the ledger and the backfills,
behind a login with the service's tokens (auth.py), with actions for operators (actions.py).
Its templates and assets ship in the package; it needs no network."""

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api.auth import Principals
from api.console import actions, backfills, pages
from api.console.render import HERE


def install(app: FastAPI, principals: Principals) -> None:
    """The console's pages, actions and static files, outside the OpenAPI document; its logins
    resolve tokens as the API's edge does."""
    app.state.console_principals = principals
    for router in (pages.router, backfills.router, actions.router):
        app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console")
