"""The API's machine-readable contract: the error envelope and its codes, what each operation
answers (per status, with its headers), the bearer scheme with each route's scope, JSON-only
request bodies, and the finishing touches of the OpenAPI document.

Routes declare their answers with `answers(...)` / `write_answers(...)` naming the domain errors
they raise; the envelope's `code` enumerates every code identity/errors.py (and the framework's
own errors) can put in it.
"""

import copy
import re
from collections import defaultdict
from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response
from starlette.routing import BaseRoute

import identity.backfill.store  # noqa: F401 - defines InputLost, one of the envelope's codes
import identity.scim.errors  # noqa: F401 - SCIM's codes, which its failed jobs carry
from api.auth import Scope, requires
from api.direct import direct
from api.errors import FRAMEWORK_CODES, OTHER_HTTP_ERROR
from api.writes import write_options
from identity.errors import (
    DatabaseUnavailable,
    HttpError,
    IdempotencyKeyReused,
    IdmirrorError,
    InsufficientScope,
    InternalError,
    InvalidToken,
    Overloaded,
    OwnedByAnotherIntegrator,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
)
from identity.ledger.jobs import JobOut

BEARER_SCHEME = "bearerAuth"
BEARER = {
    "type": "http",
    "description": "IDMIRROR_INTERNAL_TOKEN (every scope), or an integrator's `idm_` token",
    "scheme": "bearer",
}


def _error_classes(base: type[IdmirrorError] = IdmirrorError) -> Iterator[type[IdmirrorError]]:
    for cls in base.__subclasses__():
        yield cls
        yield from _error_classes(cls)


def error_codes() -> list[str]:
    """Every code an error envelope can carry."""
    codes = {cls.code for cls in _error_classes() if cls is not HttpError}
    return sorted(codes - {IdmirrorError.code} | {*FRAMEWORK_CODES.values(), OTHER_HTTP_ERROR})


class Error(BaseModel):
    """An error: `code` is stable and meant for programs, `message` for people."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "code": "user_not_found",
                    "message": "no user has this id",
                    "status": 404,
                    "details": {"user_id": "6f1c2a52-3d1e-4c8a-9a4b-2f4f0c9d7e11"},
                }
            ]
        }
    )

    code: Annotated[str, Field(json_schema_extra={"enum": error_codes()})]
    message: str
    status: int = Field(description="The HTTP status, repeated")
    details: dict[str, Any] = Field(description="Depends on the code; often empty")


class ErrorEnvelope(BaseModel):
    """Every error the API answers, whatever its origin."""

    error: Error


# --- answers ---------------------------------------------------------------------------------

Answers = dict[int | str, dict[str, Any]]


def _header(description: str, *, required: bool = True, fmt: str | None = None) -> dict[str, Any]:
    schema = {"type": "string"} if fmt is None else {"type": "string", "format": fmt}
    return {"description": description, "required": required, "schema": schema}


JOB_ID = _header("The write's job in the ledger (`GET /v1/jobs/{id}`)", fmt="uuid")
FAILED_JOB_ID = _header("Present when the error is the job's: it failed", required=False)
# The statuses a job that failed may answer with (its error's).
JOB_ERROR_STATUSES = {404, 409, 422, 500}
JOB_LOCATION = _header("Where the job is followed: `/v1/jobs/{id}`")
RETRY_AFTER = _header("Seconds to wait before sending the request again")
WWW_AUTHENTICATE = _header("`Bearer`: the scheme this API expects")

# What every route behind the token may answer: a refused token, and a database that cannot
# be reached or is not keeping up.
AUTHENTICATED: tuple[type[IdmirrorError], ...] = (
    InvalidToken,
    InsufficientScope,
    RateLimited,
    DatabaseUnavailable,
    Overloaded,
)
# What a write may answer besides its own errors: its headers or body refused, or its job
# failing unexpectedly.
WRITE_ERRORS: tuple[type[IdmirrorError], ...] = (
    ValidationFailed,
    InternalError,
    OwnedByAnotherIntegrator,
)
# What a JSON body may be refused for before it is read.
BODY_ERRORS: tuple[type[IdmirrorError], ...] = (
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)


def answers(*raised: type[IdmirrorError], authenticated: bool = True) -> Answers:
    """The error answers of a route that raises `raised` (and, `authenticated`, what every
    route behind the token may answer), one per status, each listing its codes. Its body
    when it succeeds is its return type."""
    by_status: dict[int, set[str]] = defaultdict(set)
    for cls in (*AUTHENTICATED, *raised) if authenticated else raised:
        by_status[cls.status].add(cls.code)
    declared: Answers = {}
    for status, codes in sorted(by_status.items()):
        listed = ", ".join(f"`{code}`" for code in sorted(codes))
        extra = {}
        if status == InvalidToken.status:
            extra["WWW-Authenticate"] = WWW_AUTHENTICATE
        if status in (Overloaded.status, RateLimited.status) and authenticated:
            extra["Retry-After"] = RETRY_AFTER
        declared[status] = {"model": ErrorEnvelope, "description": f"Error: {listed}"}
        if extra:
            declared[status]["headers"] = extra
    return declared


def write_answers(
    result: Any, *raised: type[IdmirrorError], body: bool = True, keyed: bool = True
) -> Answers:
    """What a write answers: `result` when its job applied, the job while it is pending, or an
    error (with the job's id when it came from the job). `body`: the write takes a JSON body;
    `keyed`: an Idempotency-Key applies to it."""
    raised = (
        *WRITE_ERRORS,
        *(BODY_ERRORS if body else ()),
        *((IdempotencyKeyReused,) if keyed else ()),
        *raised,
    )
    declared = answers(*raised)
    for status in JOB_ERROR_STATUSES & declared.keys():
        declared[status].setdefault("headers", {})["Idmirror-Job-Id"] = FAILED_JOB_ID
    return {
        200: {
            "model": result,
            "description": "The job applied: its result",
            "headers": {"Idmirror-Job-Id": JOB_ID},
        },
        202: {
            "model": JobOut,
            "description": "The job is pending (`Prefer: respond-async`, or the wait ran out)",
            "headers": {"Idmirror-Job-Id": JOB_ID, "Location": JOB_LOCATION},
        },
        **declared,
    }


# --- the bearer token ------------------------------------------------------------------------


def scope(name: str) -> Any:
    """A route's bearer token, with the scope the route needs: checked (api/auth.py) and
    documented as the operation's security requirement."""
    return requires(name)


# --- JSON bodies -----------------------------------------------------------------------------


def is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JsonRoute(APIRoute):
    """A route whose JSON body, sent as another media type, is answered 415, not 422, and
    whose plain requests have their arguments resolved by api/direct.py."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = direct(self, super().get_route_handler(), is_json)
        if self.body_field is None:
            return handler

        async def json_only(request: Request) -> Response:
            content_type = request.headers.get("content-type")
            if not is_json(content_type) and await request.body():
                raise UnsupportedMediaType(
                    "send the body as JSON (Content-Type: application/json)",
                    content_type=content_type,
                )
            return await handler(request)

        return json_only


# --- the document ----------------------------------------------------------------------------

# The write headers, read by api/writes.py: what they mean, and what they may hold.
HEADER_DOCS: dict[str, tuple[str, dict[str, Any]]] = {
    "prefer": (
        "`respond-async`: answer `202` with the job at once; `wait=N`: wait for it up to N "
        "seconds (capped by IDMIRROR_MAX_WAIT_SECONDS) before answering `202`",
        {},
    ),
    "idempotency-key": (
        "The same key with the same request within IDMIRROR_IDEMPOTENCY_TTL_HOURS answers "
        "from the first job; with another request, `422 idempotency_key_reused`",
        {"minLength": 1, "maxLength": 255},
    ),
}


def _summary(operation_id: str) -> str:
    """`listBackfillFailures` -> `List backfill failures`."""
    words = re.findall(r"[A-Z]?[a-z]+", operation_id)
    return " ".join(words).capitalize()


def _finish_operation(operation: dict[str, Any]) -> None:
    operation["summary"] = _summary(operation["operationId"])
    for requirement in operation.get("security", []):
        operation["x-scopes"] = requirement.get(BEARER_SCHEME, [])
    responses = operation["responses"]
    default_422 = responses.get("422", {}).get("content", {}).get("application/json", {})
    if default_422.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
        del responses["422"]


def write_header_parameters() -> list[dict[str, Any]]:
    """The write headers as an operation's parameters."""
    return [
        {
            "name": name,
            "in": "header",
            "required": False,
            "schema": {"type": "string", **constraints},
            "description": description,
        }
        for name, (description, constraints) in HEADER_DOCS.items()
    ]


def _calls(dependant: Dependant) -> Iterator[Any]:
    """What a route's dependencies call, its sub-dependencies' included."""
    for dependency in dependant.dependencies:
        yield dependency.call
        yield from _calls(dependency)


def _operations(
    document: dict[str, Any], routes: list[BaseRoute]
) -> Iterator[tuple[dict[str, Any], list[Any]]]:
    """Each documented operation with what its route's dependencies call. Routes left out of
    the document (SCIM's, which has its own) have no operation."""
    for route in iter_route_contexts(routes):  # each route with its routers' prefixes
        original = route.original_route
        if not isinstance(original, APIRoute):
            continue
        for method in route.methods or ():
            operation = document["paths"].get(route.path_format, {}).get(method.lower())
            if operation is not None:
                yield operation, list(_calls(original.dependant))


def _declare(document: dict[str, Any], routes: list[BaseRoute]) -> None:
    """Each route's scope (api/auth.py Scope) as its operation's security requirement, and
    the write headers as parameters of every operation whose route reads them through
    api/writes.py write_options (which reads them from the request itself)."""
    headers = write_header_parameters()
    for operation, calls in _operations(document, routes):
        if scopes := [call.name for call in calls if isinstance(call, Scope)]:
            operation["security"] = [{BEARER_SCHEME: scopes}]
        if write_options in calls:
            operation.setdefault("parameters", []).extend(copy.deepcopy(headers))
    document.setdefault("components", {})["securitySchemes"] = {BEARER_SCHEME: BEARER}


def _finish(document: dict[str, Any], routes: list[BaseRoute]) -> dict[str, Any]:
    """Summaries from operation ids, each operation's scopes as its security requirement and
    as `x-scopes`, the write headers declared, and FastAPI's own validation error gone: this
    API never answers it (its 422 is the envelope, declared where it can happen)."""
    _declare(document, routes)
    for operations in document["paths"].values():
        for operation in operations.values():
            _finish_operation(operation)
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def install(app: FastAPI) -> None:
    """Serve the finished document at /openapi.json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _finish(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                ),
                app.routes,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
