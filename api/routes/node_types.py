"""PUT /v1/internal/node-types/{id}; GET /v1/node-types."""

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.deps import Paging, read_session
from api.writes import LedgerDep, WriteOptions, submit, write_options, write_responses
from identity import node_types
from identity.node_types import NodeTypeOut, NodeTypeUpsert, NodeTypeWriteOut
from identity.pagination import Page

internal = APIRouter(prefix="/v1/internal/node-types", tags=["node types"])
public = APIRouter(prefix="/v1/node-types", tags=["node types"])


@internal.put("/{node_type_id}", responses=write_responses(NodeTypeWriteOut))
async def put_node_type(
    node_type_id: str,
    body: NodeTypeUpsert,
    into: LedgerDep,
    options: WriteOptions = Depends(write_options),
) -> Response:
    """Create or replace a node type and its params_schema."""
    sub = node_types.upsert_submission(node_type_id, body, options.idempotency_key)
    return await submit(into, sub, options)


@public.get("/{node_type_id}")
def get_node_type(node_type_id: str, session: Session = Depends(read_session)) -> NodeTypeOut:
    return node_types.get_node_type(session, node_type_id)


@public.get("")
def list_node_types(
    paging: Paging = Depends(), session: Session = Depends(read_session)
) -> Page[NodeTypeOut]:
    return node_types.list_node_types(session, limit=paging.limit, cursor=paging.cursor)
