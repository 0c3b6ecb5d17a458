"""Every error leaves the API in one JSON envelope: the exception handlers of known errors.
(An unexpected one is answered by api/limits.py, the edge every request passes first.)"""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from identity.errors import (
    DatabaseUnavailable,
    HttpError,
    IdmirrorError,
    Overloaded,
    ServiceUnavailable,
    ValidationFailed,
)

log = logging.getLogger(__name__)
# The codes of the framework's own errors: an unknown route, a wrong method, anything else.
FRAMEWORK_CODES = {404: "not_found", 405: "method_not_allowed"}
OTHER_HTTP_ERROR = "http_error"


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
        code = FRAMEWORK_CODES.get(exc.status_code, OTHER_HTTP_ERROR)
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
