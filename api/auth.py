"""Who a request is, and what it may do: its bearer token resolved to a principal (the
integrator it acts for, the token, its scopes and its rate limit), checked at the edge before
any body is read, and each route's scope, declared with `requires(...)`.

IDMIRROR_INTERNAL_TOKEN is the bootstrap admin token: every scope, every integrator, no rate
limit; compared in constant time. An integrator's token (`idm_...`) is found by the hash of
its secret (identity/tokens.py). Each process caches what a token resolved to for
IDMIRROR_TOKEN_CACHE_SECONDS (1 s), and forgets everything it cached when an admin revokes a
token or changes an integrator (a NOTIFY on identity.integrators.TOKENS_CHANNEL, which the
job waiter's connection LISTENs to), so revocation, expiry and disabling take effect in every
API process within that second, without a restart.
"""

import asyncio
import hmac
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncEngine

from identity.access import OPERATOR, SCOPES, Actor
from identity.errors import InsufficientScope, InvalidToken
from identity.integrators import RateLimit
from identity.tokens import PREFIX, RESOLVE, secret_hash

PRINCIPAL = "idmirror.principal"  # the key of the request's principal in its ASGI scope
REFUSED = Counter(
    "idmirror_requests_refused", "Requests refused before they reached a route", ["reason"]
)
_MAX_CACHED = 10_000


@dataclass(frozen=True)
class Principal:
    """What a token may do: act for `actor`, within `scopes`, at `rate` (None: unlimited)."""

    actor: Actor
    scopes: frozenset[str]
    rate: RateLimit | None
    expires_at: float | None = None  # epoch seconds

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


BOOTSTRAP = Principal(OPERATOR, frozenset(SCOPES), None)


class Principals:
    """Resolves bearer tokens to principals, caching each answer briefly."""

    def __init__(
        self, internal_token: str | None, cache_seconds: float, default_rate: RateLimit
    ) -> None:
        self._internal = (internal_token or "").encode()
        self._ttl = cache_seconds
        self._default = default_rate
        self._engine: AsyncEngine | None = None
        # hash -> (principal or None for no such token, when it was read: time.monotonic())
        self._cache: dict[bytes, tuple[Principal | None, float]] = {}
        self._reading: dict[bytes, asyncio.Future[Principal | None]] = {}

    def use(self, engine: AsyncEngine) -> None:
        """Read tokens through `engine` (the accept engine of the app's event loop)."""
        self._engine = engine

    def forget_all(self) -> None:
        """Drop every cached answer: a token was revoked or an integrator changed."""
        self._cache.clear()

    async def resolve(self, authorization: bytes | None) -> Principal | None:
        """The principal an Authorization header carries; None when it carries none."""
        scheme, _, raw = (authorization or b"").partition(b" ")
        token = raw.strip()
        if scheme.lower() != b"bearer" or not token:
            return None
        if self._internal and hmac.compare_digest(token, self._internal):
            return BOOTSTRAP
        if not token.startswith(PREFIX.encode()) or self._engine is None:
            return None
        digest = secret_hash(token.decode("latin-1"))
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is None or now - cached[1] >= self._ttl:
            principal = await self._read(digest)
        else:
            principal = cached[0]
        expires = principal.expires_at if principal is not None else None
        if expires is not None and time.time() >= expires:
            return None
        return principal

    async def _read(self, digest: bytes) -> Principal | None:
        """One read per token at a time: requests that need the same token wait for it."""
        reading = self._reading.get(digest)
        if reading is not None:
            return await asyncio.shield(reading)
        future: asyncio.Future[Principal | None] = asyncio.get_running_loop().create_future()
        self._reading[digest] = future
        try:
            read_at = time.monotonic()
            principal = await self._query(digest)
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[digest] = (principal, read_at)
            future.set_result(principal)
            return principal
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters, if any, raise it themselves
            raise
        finally:
            del self._reading[digest]

    async def _query(self, digest: bytes) -> Principal | None:
        assert self._engine is not None
        async with self._engine.connect() as conn:
            row = (await conn.execute(RESOLVE, {"hash": digest})).one_or_none()
        if row is None or row.revoked_at is not None or row.disabled:
            return None
        rate = self._default
        if row.rate_per_second is not None and row.rate_burst is not None:
            rate = RateLimit(per_second=row.rate_per_second, burst=row.rate_burst)
        expires: datetime | None = row.expires_at
        return Principal(
            Actor(row.integrator, row.id, admin="admin" in row.scopes),
            frozenset(row.scopes),
            rate,
            expires.timestamp() if expires is not None else None,
        )


# --- route dependencies ----------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """A route's dependency on a token with scope `name` (or `admin`); its value is the
    request's Principal, which the edge resolved before the route was chosen. A plain
    dependency: FastAPI's security classes would parse the Authorization header once more for
    every request; api/contract.py documents it as the operation's security requirement."""

    name: str

    async def __call__(self, request: Request) -> Principal:
        principal = await current_principal(request)
        if not principal.allows(self.name):
            REFUSED.labels("insufficient_scope").inc()
            raise InsufficientScope(
                f"this token lacks the scope this route needs ({self.name})",
                required=[self.name],
            )
        return principal


def requires(scope: str) -> Any:
    """A route's dependency on a token with `scope` (or `admin`), shown in the OpenAPI
    document as the route's security requirement; its value is the request's Principal."""
    return Depends(Scope(scope))


async def current_principal(request: Request) -> Principal:
    """The request's principal, for a route that acts on its behalf (its scope is declared
    apart, with `requires`)."""
    principal: Principal | None = request.scope.get(PRINCIPAL)
    if principal is None:
        raise InvalidToken("missing or wrong bearer token")
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]
