"""The edge's checks of who is asking, from a request's headers alone: its token (401
invalid_token), its integrator's rate limit (429 rate_limited, with Retry-After), and for
/metrics a token with the `metrics` or `admin` scope unless IDMIRROR_METRICS_PUBLIC is set.
Under `/scim/` the refusals are in SCIM's error schema.

api/limits.py calls `admit` before any body is read. An admitted request carries its principal
in its ASGI scope (api/auth.PRINCIPAL) for the routes, and the edge adds RateLimit-Limit,
RateLimit-Remaining and RateLimit-Reset to every answer to a rate-limited principal. A backfill
upload costs one request when it starts and one more per IDMIRROR_RATE_LIMIT_BACKFILL_BYTES of
its body once the body has arrived, before it is answered (taken even from too few tokens: a debt
the integrator's next requests pay).
"""

from collections.abc import Awaitable, Callable

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.types import Receive, Scope, Send

from api.auth import PRINCIPAL, REFUSED, Principal, Principals
from api.errors import answer_error
from api.ratelimit import Decision, RateLimiter
from identity.errors import (
    DatabaseUnavailable,
    IdmirrorError,
    InsufficientScope,
    InvalidToken,
    RateLimited,
)


class Guard:
    """Admits or refuses requests; made by create_app, started on the app's event loop."""

    def __init__(
        self,
        principals: Principals,
        limiter: RateLimiter | None,
        *,
        metrics_public: bool,
        backfill_bytes: int,
    ) -> None:
        self.principals = principals
        self.limiter = limiter
        self._metrics_public = metrics_public
        self._backfill_bytes = backfill_bytes

    def guards(self, path: str) -> bool:
        """Whether a request to `path` needs a token."""
        guarded = path.startswith(("/v1/", "/scim/"))
        return guarded or (path == "/metrics" and not self._metrics_public)

    async def admit(
        self, scope: Scope, receive: Receive, send: Send, authorization: bytes | None
    ) -> list[tuple[bytes, bytes]] | None:
        """The headers to add to an admitted request's answer (its rate limit's, if it has
        one); None once a refusal has been sent."""
        try:
            principal = await self.principals.resolve(authorization)
        except (DBAPIError, PoolTimeout, OSError):
            # An integrator's token cannot be checked without the database: not a 500.
            down = DatabaseUnavailable("the database cannot be reached to check the token")
            refusal = answer_error(scope["path"], down, headers={"Retry-After": "1"})
            await refusal(scope, receive, send)
            return None
        if principal is None:
            invalid = InvalidToken("missing, wrong, expired or revoked bearer token")
            await _refuse(invalid, scope, receive, send, {"WWW-Authenticate": "Bearer"})
            return None
        if scope["path"] == "/metrics" and not principal.allows("metrics"):
            lacking = InsufficientScope("/metrics needs the metrics scope", required=["metrics"])
            await _refuse(lacking, scope, receive, send)
            return None
        scope[PRINCIPAL] = principal
        decision = await self._take(principal, 1.0)
        if decision is None:
            return []
        if not decision.allowed:
            limited = RateLimited(
                "this integrator is over its rate limit; send again after Retry-After seconds",
                integrator=principal.actor.integrator,
                per_second=decision.limit.per_second,
                burst=decision.limit.burst,
            )
            await _refuse(limited, scope, receive, send, decision.headers())
            return None
        return decision.raw_headers()

    def upload_ended(self, scope: Scope) -> Callable[[int], Awaitable[None]]:
        """What takes an upload's bytes from its integrator's bucket once it has arrived
        (before it is answered)."""

        async def charge(received: int) -> None:
            principal: Principal | None = scope.get(PRINCIPAL)
            if principal is not None and received >= self._backfill_bytes:
                await self._take(principal, received // self._backfill_bytes, force=True)

        return charge

    async def _take(
        self, principal: Principal, cost: float, force: bool = False
    ) -> Decision | None:
        integrator = principal.actor.integrator
        if self.limiter is None or principal.rate is None or integrator is None:
            return None
        return await self.limiter.take(integrator, principal.rate, cost, force=force)


async def _refuse(
    error: IdmirrorError,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[str, str] | None = None,
) -> None:
    REFUSED.labels(error.code).inc()
    await answer_error(scope["path"], error, headers=headers)(scope, receive, send)
