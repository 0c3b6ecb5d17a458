"""What a SCIM request carries: its JSON body (sent as application/scim+json or
application/json), `attributes`/`excludedAttributes`, paging, and the write options every SCIM
write shares (providers cannot poll, so a write waits for its job as long as allowed)."""

import dataclasses
import json
from typing import Any

from fastapi import Depends, Query, Request
from pydantic import ValidationError
from scim2_models import ResponseParameters

from api.contract import is_json
from api.writes import WriteOptions, write_options
from identity.errors import UnsupportedMediaType
from identity.scim.discovery import MAX_RESULTS
from identity.scim.errors import InvalidSyntax, InvalidValue
from identity.settings import get_settings


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; 415 for another media type, invalidSyntax for bad JSON."""
    content_type = request.headers.get("content-type")
    if content_type is not None and not is_json(content_type):
        raise UnsupportedMediaType(
            "send the body as application/scim+json or application/json",
            content_type=content_type,
        )
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise InvalidSyntax("the body is not JSON") from None
    if not isinstance(body, dict):
        raise InvalidSyntax("the body is not a JSON object")
    return body


def _names(raw: str | list[str] | None) -> list[str] | None:
    if raw is None:
        return None
    parts = raw.split(",") if isinstance(raw, str) else raw
    return [name.strip() for name in parts if name.strip()] or None


def response_parameters(
    attributes: str | list[str] | None, excluded: str | list[str] | None
) -> ResponseParameters[Any] | None:
    """`attributes` and `excludedAttributes` (comma-separated in a query, lists in a
    .search body) as scim2-models reads them."""
    names, excluded_names = _names(attributes), _names(excluded)
    if names is None and excluded_names is None:
        return None
    try:
        return ResponseParameters(attributes=names, excluded_attributes=excluded_names)
    except ValidationError as exc:
        raise InvalidValue(f"attributes are not valid: {exc.errors()[0]['msg']}") from None


def query_parameters(
    attributes: str | None = Query(None, max_length=4096),
    excluded_attributes: str | None = Query(None, alias="excludedAttributes", max_length=4096),
) -> ResponseParameters[Any] | None:
    return response_parameters(attributes, excluded_attributes)


def paging(start_index: Any, count: Any) -> tuple[int, int]:
    """RFC 7644 §3.4.2.4: a startIndex below 1 is 1, a negative count is 0, and a page holds
    MAX_RESULTS resources at the most."""
    try:
        start = max(int(start_index if start_index is not None else 1), 1)
        size = max(int(count if count is not None else 100), 0)
    except (TypeError, ValueError):
        raise InvalidValue("startIndex and count are integers") from None
    return start, min(size, MAX_RESULTS)


async def scim_write_options(options: WriteOptions = Depends(write_options)) -> WriteOptions:
    """The write options of a SCIM write: it waits for its job up to
    IDMIRROR_MAX_WAIT_SECONDS unless it asked for `Prefer: respond-async`."""
    if options.respond_async:
        return options
    return dataclasses.replace(options, wait_seconds=get_settings().max_wait_seconds)
