"""The console's login: a bearer token, given once in a form, kept in an HttpOnly, SameSite=Strict
cookie scoped to /console, and resolved again on every request as the API's edge resolves it
(api/auth.py), so that a token revoked, expired or of a disabled integrator ends its sessions
within a second.

`console_role` says what a token may do here: `operator` (a token with the `admin` scope, such
as IDMIRROR_INTERNAL_TOKEN: read everything and act: retry, discard, backfill retry and cancel)
or `viewer` (a token with `jobs:read`: read only, and only its integrator's jobs and
backfills). Actions also need the form's CSRF token, derived from the session's token: a page of
another site can neither read it nor, with the cookie SameSite=Strict, send the cookie along.
"""

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from fastapi import Depends, Request

from api.auth import Principal, Principals

COOKIE = "idmirror_console"
COOKIE_SECONDS = 12 * 3600
Role = Literal["operator", "viewer"]


def console_role(principal: Principal | None) -> Role | None:
    """What a token's principal may do in the console; None: it may not sign in."""
    if principal is None:
        return None
    if principal.allows("admin"):
        return "operator"
    if principal.allows("jobs:read"):
        return "viewer"
    return None


async def resolve(request: Request, token: str) -> Principal | None:
    """The principal `token` stands for, as the API's edge would find it."""
    principals: Principals = request.app.state.console_principals
    return await principals.resolve(b"Bearer " + token.encode("utf-8", "replace"))


class LoginRequired(Exception):
    """No valid session: the page answers with the login form."""


class Forbidden(Exception):
    """The login may not do this: the page answers 403 with the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Login:
    """Who is signed in, and the CSRF token of their forms."""

    role: Role
    csrf: str
    principal: Principal

    @property
    def operates(self) -> bool:
        return self.role == "operator"

    @property
    def sees(self) -> str | None:
        """The integrator whose data the login reads (None: everyone's)."""
        return self.principal.actor.sees


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), b"idmirror console forms", hashlib.sha256).hexdigest()


async def signed_in(request: Request) -> Login:
    """The session's login; LoginRequired without a valid one."""
    token = request.cookies.get(COOKIE)
    principal = await resolve(request, token) if token else None
    role = console_role(principal)
    if token is None or principal is None or role is None:
        raise LoginRequired
    return Login(role, csrf_token(token), principal)


async def form(request: Request) -> dict[str, str]:
    """A form's fields (application/x-www-form-urlencoded), the first value of each."""
    fields = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


@dataclass(frozen=True)
class Action:
    """An operator's action: who, and the fields of the form that asked for it."""

    login: Login
    fields: dict[str, str]


async def operator(request: Request, login: Login = Depends(signed_in)) -> Action:
    """An action's form, once the login may act and the form is the console's own."""
    if not login.operates:
        raise Forbidden("this login is read-only: actions need a token with the admin scope")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden("this form was not sent from the console")
    fields = await form(request)
    if not hmac.compare_digest(fields.get("csrf", ""), login.csrf):
        raise Forbidden("this form is stale or not the console's own; reload the page")
    return Action(login, fields)


def safe_next(target: str | None) -> str:
    """Where to go after the login: a console page, never another site."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console"
