"""Every error leaves the API in one JSON envelope: the exception handlers of known errors.
(An unexpected one is answered by api/limits.py, the edge every request passes first.)"""

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.scim import answers as scim
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


def answer_error(
    path: str, error: IdmirrorError, headers: Mapping[str, str] | None = None
) -> Response:
    """`error` as the protocol of `path` answers it: SCIM's error schema under /scim/, the
    envelope elsewhere."""
    if scim.is_scim(path):
        return scim.error_response(error, headers=headers)
    return error_response(error, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(IdmirrorError)
    async def domain_error(request: Request, exc: IdmirrorError) -> Response:
        if isinstance(exc, ServiceUnavailable):
            return answer_error(request.url.path, exc, headers={"Retry-After": "1"})
        return answer_error(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": _location(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type")}
            for e in exc.errors()
        ]
        failed = ValidationFailed("the request is not valid", errors=errors)
        return answer_error(request.url.path, failed)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = FRAMEWORK_CODES.get(exc.status_code, OTHER_HTTP_ERROR)
        error = HttpError(exc.status_code, code, str(exc.detail))
        return answer_error(request.url.path, error, headers=exc.headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def database_unavailable(request: Request, exc: Exception) -> Response:
        log.warning("database unreachable on %s %s: %s", request.method, request.url.path, exc)
        error: ServiceUnavailable = DatabaseUnavailable(
            "the database cannot be reached; send the request again "
            "(an Idempotency-Key makes that safe)"
        )
        if isinstance(exc, PoolTimeout) and not isinstance(exc.__cause__, DBAPIError):
            # Every connection stayed busy until the write's bound: the database is reachable
            # but not keeping up.
            error = Overloaded("no database connection came free in time; send the request again")
        return answer_error(request.url.path, error, headers={"Retry-After": "1"})
