"""How SCIM is answered: `application/scim+json`, the RFC 7644 error schema (`status` as a
string, `scimType`), and a write's job as a SCIM answer (201 with Location and ETag for a
create, the resource for other writes, the job's error in the SCIM schema when it failed)."""

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from identity.errors import IdmirrorError, ServiceUnavailable
from identity.scim.errors import ScimError

SCIM_MEDIA = "application/scim+json"
SCIM_PREFIX = "/scim/"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
# Codes of idmirror's own errors that have a SCIM counterpart, and the status SCIM gives them.
_OWN_CODES: dict[str, tuple[int, str | None]] = {
    "slug_taken": (409, "uniqueness"),
    "validation_error": (400, "invalidValue"),
    "invalid_user_id": (404, None),
    "idempotency_key_reused": (400, "invalidValue"),
    "invalid_webhook_url": (400, "invalidValue"),
    "user_not_found": (400, "invalidValue"),  # an agent's owner
    # Another integrator's identity: as unseen to a SCIM client as it is to its reads.
    "owned_by_another_integrator": (404, None),
}


class ScimResponse(JSONResponse):
    """A JSON body sent as application/scim+json."""

    media_type = SCIM_MEDIA


def _scim_errors(base: type[ScimError] = ScimError) -> Iterator[type[ScimError]]:
    for cls in base.__subclasses__():
        yield cls
        yield from _scim_errors(cls)


def _scim_type(code: str) -> tuple[int | None, str | None]:
    for cls in _scim_errors():
        if cls.code == code:
            return cls.status, cls.scim_type
    status, scim_type = _OWN_CODES.get(code, (None, None))
    return status, scim_type


def error_body(envelope: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The SCIM error of an idmirror error envelope, and its status."""
    mapped_status, scim_type = _scim_type(envelope["code"])
    status = mapped_status or int(envelope["status"])
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status)}
    if scim_type:
        body["scimType"] = scim_type
    body["detail"] = envelope["message"]
    return status, body


def error_response(error: IdmirrorError, headers: Mapping[str, str] | None = None) -> Response:
    """A domain error in the SCIM error schema."""
    status, body = error_body(error.envelope())
    if isinstance(error, ServiceUnavailable):
        headers = {"Retry-After": "1", **(headers or {})}
    return ScimResponse(body, status_code=status, headers=headers)


def is_scim(path: str) -> bool:
    return path.startswith(SCIM_PREFIX)


def base_url(request: Request) -> str:
    """Where this service is reached, as the request named it (for `meta.location`)."""
    return str(request.base_url).rstrip("/")


def listed(resources: list[dict[str, Any]], total: int, start_index: int = 1) -> Response:
    """A ListResponse: a page of resources, from the `start_index`th of `total`."""
    body = {
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }
    return ScimResponse(body)


def job_answer(
    job: dict[str, Any],
    render: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    created: bool = False,
) -> Response:
    """A write's answer from its job: the resource `render` makes of the result (201 with
    Location when `created` made it), the job's error, or 202 with the job while it is still
    pending."""
    headers = {"Idmirror-Job-Id": job["id"]}
    if job["status"] == "failed":
        status, body = error_body(job["error"])
        return ScimResponse(body, status_code=status, headers=headers)
    if job["status"] != "applied":
        headers["Location"] = f"/v1/jobs/{job['id']}"
        return JSONResponse(job, status_code=202, headers=headers)
    resource = render(job["result"])
    meta = resource.get("meta", {})
    if "version" in meta:
        headers["ETag"] = meta["version"]
    status = 200
    if created and job["result"].get("created"):
        status = 201
        headers["Location"] = meta.get("location", "")
    return ScimResponse(resource, status_code=status, headers=headers)
