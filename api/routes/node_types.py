"""PUT /v1/internal/node-types/{id}; GET /v1/node-types."""

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from api.contract import JsonRoute, answers, scope, write_answers
from api.deps import Paging, read_session
from api.params import NodeTypeBody, NodeTypeId
from api.writes import LedgerDep, WriteOptions, submit, write_options
from identity import node_types
from identity.errors import (
    InvalidCursor,
    InvalidNodeTypeId,
    InvalidParamsSchema,
    NodeTypeNotFound,
    ValidationFailed,
)
from identity.node_types import NodeTypeOut, NodeTypeWriteOut
from identity.pagination import Page

internal = APIRouter(prefix="/v1/internal/node-types", tags=["node types"], route_class=JsonRoute)
public = APIRouter(prefix="/v1/node-types", tags=["node types"], route_class=JsonRoute)


@internal.put(
    "/{node_type_id}",
    operation_id="upsertNodeType",
    dependencies=[scope("node_types:write")],
    responses=write_answers(NodeTypeWriteOut, InvalidNodeTypeId, InvalidParamsSchema),
)
async def put_node_type(
    node_type_id: NodeTypeId,
    body: NodeTypeBody,
    into: LedgerDep,
    options: WriteOptions = Depends(write_options),
) -> Response:
    """Create or replace a node type and its params_schema."""
    sub = node_types.upsert_submission(node_type_id, body, options.idempotency_key)
    return await submit(into, sub, options)


@public.get(
    "/{node_type_id}",
    operation_id="getNodeType",
    dependencies=[scope("read")],
    responses=answers(InvalidNodeTypeId, NodeTypeNotFound),
)
def get_node_type(
    node_type_id: NodeTypeId, session: Session = Depends(read_session)
) -> NodeTypeOut:
    """The node type."""
    return node_types.get_node_type(session, node_type_id)


@public.get(
    "",
    operation_id="listNodeTypes",
    dependencies=[scope("read")],
    responses=answers(InvalidCursor, ValidationFailed),
)
def list_node_types(
    paging: Paging = Depends(), session: Session = Depends(read_session)
) -> Page[NodeTypeOut]:
    """A page of node types, ordered by id."""
    return node_types.list_node_types(session, limit=paging.limit, cursor=paging.cursor)
