"""/scim/v2/ServiceProviderConfig, /ResourceTypes and /Schemas (RFC 7644 §4)."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.contract import scope
from api.scim.answers import ScimResponse, base_url, listed
from identity.scim import discovery
from identity.scim.errors import ScimNotFound

router = APIRouter(
    prefix="/scim/v2", tags=["scim"], dependencies=[scope("scim")], include_in_schema=False
)


def _listed(resources: list[dict[str, Any]]) -> Response:
    return listed(resources, len(resources))


def _one(resources: list[dict[str, Any]], wanted: str) -> Response:
    for resource in resources:
        if resource["id"] == wanted:
            return ScimResponse(resource)
    raise ScimNotFound(f"there is no {wanted!r} here", id=wanted)


@router.get("/ServiceProviderConfig")
async def service_provider_config(request: Request) -> Response:
    """What this service supports."""
    return ScimResponse(discovery.service_provider_config(base_url(request)))


@router.get("/ResourceTypes")
async def resource_types(request: Request) -> Response:
    """The resource types served."""
    return _listed(discovery.resource_types(base_url(request)))


@router.get("/ResourceTypes/{name}")
async def resource_type(name: str, request: Request) -> Response:
    return _one(discovery.resource_types(base_url(request)), name)


@router.get("/Schemas")
async def schemas(request: Request) -> Response:
    """The schemas of the resources and extensions served."""
    return _listed(discovery.schemas(base_url(request)))


@router.get("/Schemas/{urn}")
async def schema(urn: str, request: Request) -> Response:
    return _one(discovery.schemas(base_url(request)), urn)
