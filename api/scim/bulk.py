"""POST /scim/v2/Bulk: the operations of a BulkRequest applied in order, each a job recorded
and waited for as its own request would be, answered together as a BulkResponse."""

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.contract import scope
from api.deps import read_session
from api.scim.answers import ScimResponse, base_url, error_response
from api.scim.bodies import json_body, scim_write_options
from api.scim.changes import Render, write_answer
from api.writes import Ledger, LedgerDep, WriteOptions, record
from identity.errors import IdmirrorError
from identity.scim import agents, bulk, users
from identity.scim.requests import SUBMISSIONS

router = APIRouter(
    prefix="/scim/v2", tags=["scim"], dependencies=[scope("scim")], include_in_schema=False
)
_ANSWERS: dict[str, Render] = {"Users": users.answered, "Agents": agents.answered}


async def _apply(
    raw: Any, ids: bulk.BulkIds, into: Ledger, options: WriteOptions, session: Session, base: str
) -> dict[str, Any]:
    """One operation, its job waited for; its result in the BulkResponse."""
    operation, location = None, None
    try:
        operation = bulk.operation_of(raw)
        endpoint, write = bulk.write_request(operation, ids, options.actor.sees)
        if write.resource_id is not None:
            location = f"{base}/scim/v2/{endpoint}/{write.resource_id}"
        sub = await run_in_threadpool(SUBMISSIONS[endpoint], session, write)
        session.close()
        response = write_answer(await record(into, sub, options), write, _ANSWERS[endpoint], base)
    except IdmirrorError as error:
        response = error_response(error)
    body = json.loads(bytes(response.body)) if response.body else None
    if operation is not None and operation.bulk_id and response.status_code == 201 and body:
        ids.created[operation.bulk_id] = body["id"]
    return bulk.result_of(operation, raw, response.status_code, body, location)


@router.post("/Bulk")
async def apply_bulk(
    request: Request,
    into: LedgerDep,
    options: WriteOptions = Depends(scim_write_options),
    session: Session = Depends(read_session),
) -> Response:
    """Apply a BulkRequest's operations in order, until failOnErrors of them have failed."""
    sent = bulk.parse_bulk(await json_body(request))
    ids, results, errors = bulk.BulkIds(), [], 0
    for raw in sent.operations:
        if sent.fail_on_errors is not None and errors >= sent.fail_on_errors:
            break
        result = await _apply(raw, ids, into, options, session, base_url(request))
        errors += int(result["status"]) >= 400
        results.append(result)
    return ScimResponse({"schemas": [bulk.BULK_RESPONSE], "Operations": results})
