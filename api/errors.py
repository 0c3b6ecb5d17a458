"""Every error leaves the API in one JSON envelope."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from identity.errors import (
    DatabaseUnavailable,
    HttpError,
    IdmirrorError,
    InternalError,
    Overloaded,
    ServiceUnavailable,
    ValidationFailed,
)

log = logging.getLogger(__name__)


def error_response(error: IdmirrorError, **kwargs: Any) -> JSONResponse:
    """The envelope of `error`, under its status."""
    return JSONResponse({"error": error.envelope()}, status_code=error.status, **kwargs)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(IdmirrorError)
    async def domain_error(_: Request, exc: IdmirrorError) -> JSONResponse:
        if isinstance(exc, ServiceUnavailable):
            return error_response(exc, headers={"Retry-After": "1"})
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": _location(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
            for e in exc.errors()
        ]
        return error_response(ValidationFailed("the request is not valid", errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        error = HttpError(exc.status_code, code, str(exc.detail))
        return error_response(error, headers=exc.headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
        error: ServiceUnavailable = DatabaseUnavailable(
            "the database cannot be reached; send the request again "
            "(an Idempotency-Key makes that safe)"
        )
        if isinstance(exc, PoolTimeout) and not isinstance(exc.__cause__, DBAPIError):
            # Every connection stayed busy until the write's bound: the database is reachable
            # but not keeping up.
            error = Overloaded("no database connection came free in time; send the request again")
        return error_response(error, headers={"Retry-After": "1"})

    app.add_middleware(UnexpectedErrors)


class UnexpectedErrors:
    """Answer an unexpected exception with the 500 envelope and let the request end there.

    Starlette's own catch-all handler answers, then raises again, and uvicorn closes the
    connection on that: a client's next request on its keep-alive connection would fail."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # part of an answer is out: nothing else can be said on this connection
            response = error_response(InternalError("the server failed to handle this request"))
            await response(scope, receive, send)
