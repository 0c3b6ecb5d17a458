"""The node-type catalog: each type carries a JSON Schema that its nodes' params must satisfy."""

import json
import uuid
from functools import lru_cache
from typing import Any

import jsonschema
import referencing.exceptions
from pydantic import BaseModel, Field, field_validator
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.access import OPERATOR, Actor, check_owner
from identity.answers import Applied, Timestamp, UpsertOutcome, upserted
from identity.errors import InvalidParams, InvalidParamsSchema, NodeTypeNotFound
from identity.keys import NodeTypeKey
from identity.ledger.jobs import Submission
from identity.pagination import Page, list_by_id
from identity.schemas import Body, check_metadata_size
from identity.settings import get_settings

COLUMNS = "id, name, description, params_schema, version, created_at, updated_at"


class NodeTypeUpsert(Body):
    """PUT /v1/internal/node-types/{node_type_id}."""

    name: str = Field(min_length=1, max_length=255)
    description: str | None = Field(None, max_length=5000)
    params_schema: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params_schema")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Every node created or patched is validated against it, in every worker: bounded.
        return check_metadata_size(value, get_settings().max_params_schema_bytes, "params_schema")


def parse_id(raw: str) -> uuid.UUID:
    """A node type id from a path or an item: a UUID, else invalid_node_type_id."""
    return NodeTypeKey.parse(raw).node_type_id


def check_schema(schema: dict[str, Any]) -> None:
    """Refuse a params_schema that is not itself a valid JSON Schema."""
    validator = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        validator.check_schema(schema)
        # Resolving every reference once now refuses schemas that would fail on first use.
        validator(schema).is_valid({})
    except jsonschema.SchemaError as exc:
        raise InvalidParamsSchema(
            f"params_schema is not a valid JSON Schema: {exc.message}",
            path="/" + "/".join(str(p) for p in exc.path),
        ) from None
    except referencing.exceptions.Unresolvable as exc:
        raise InvalidParamsSchema(f"params_schema has an unresolvable reference: {exc}") from None


@lru_cache(maxsize=1024)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def validate_params(schema: dict[str, Any], params: dict[str, Any], **context: Any) -> None:
    """Raise InvalidParams naming the JSON path of the first failure."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(params))
    except referencing.exceptions.Unresolvable as exc:
        raise InvalidParams(
            f"the node type's params_schema has a reference that cannot be resolved: {exc}",
            path="$",
            **context,
        ) from None
    if error is not None:
        path = "$" + "".join(
            f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
        )
        raise InvalidParams(
            f"params_used does not match the node type: {error.message}", path=path, **context
        )


def upsert_submission(raw_id: str, body: NodeTypeUpsert, idempotency_key: str | None) -> Submission:
    key = NodeTypeKey.parse(raw_id)
    check_schema(body.params_schema)
    return Submission(
        key=str(key),
        kind="node_type.upsert",
        payload=body.model_dump(mode="json"),
        explicit_version=body.explicit_version(),
        idempotency_key=idempotency_key,
    )


class NodeTypeOut(BaseModel):
    """A node type as the API shows it."""

    id: uuid.UUID
    name: str
    description: str | None
    params_schema: dict[str, Any]
    version: int
    created_at: Timestamp
    updated_at: Timestamp


class NodeTypeWriteOut(NodeTypeOut):
    """The answer to a node type upsert: the type as written, and what the write did."""

    created: bool
    outcome: UpsertOutcome


def node_type_out(row: Any) -> NodeTypeOut:
    """A node_types row in its public form."""
    return NodeTypeOut.model_validate(row._mapping)


_UPSERT = text(
    f"""
    INSERT INTO node_types AS t (id, name, description, params_schema, version, owner,
                                 created_at, updated_at)
    VALUES (:id, :name, :description, CAST(:params_schema AS jsonb), :version, :owner,
            clock_timestamp(), clock_timestamp())
    ON CONFLICT (id) DO UPDATE
        SET name = excluded.name, description = excluded.description,
            params_schema = excluded.params_schema, version = excluded.version,
            updated_at = clock_timestamp()
        WHERE t.version <= excluded.version
          AND (t.name, t.description, t.params_schema)
              IS DISTINCT FROM (excluded.name, excluded.description, excluded.params_schema)
    RETURNING {COLUMNS}, (xmax = 0) AS inserted
    """
)


def upsert_node_type(
    session: Session, key: NodeTypeKey, body: NodeTypeUpsert, version: int, actor: Actor = OPERATOR
) -> Applied:
    """Create or replace a node type; identical or older bodies change nothing. The catalog is
    read by everyone; a node type is written only by the integrator that created it."""
    node_type_id = key.node_type_id
    if not actor.admin:
        owner = session.execute(
            text("SELECT owner FROM node_types WHERE id = :id"), {"id": node_type_id}
        ).one_or_none()
        if owner is not None:
            check_owner(actor, owner.owner, "node type", node_type_id=str(node_type_id))
    row = session.execute(
        _UPSERT,
        {
            "id": node_type_id,
            "name": body.name,
            "description": body.description,
            "params_schema": json.dumps(body.params_schema),
            "version": version,
            "owner": actor.integrator,
        },
    ).one_or_none()
    existing = _select(session, node_type_id) if row is None else None
    return upserted(row, existing, version, NodeTypeWriteOut)


def _select(session: Session, node_type_id: uuid.UUID) -> Any:
    return session.execute(
        text(f"SELECT {COLUMNS} FROM node_types WHERE id = :id"), {"id": node_type_id}
    ).one_or_none()


def get_node_type(session: Session, raw_id: str) -> NodeTypeOut:
    """The node type with this id; NodeTypeNotFound when there is none."""
    row = _select(session, parse_id(raw_id))
    if row is None:
        raise NodeTypeNotFound("no node type has this id", node_type_id=raw_id)
    return node_type_out(row)


def list_node_types(session: Session, *, limit: int, cursor: str | None) -> Page[NodeTypeOut]:
    """Node types in id order, a page at a time."""
    return list_by_id(session, f"SELECT {COLUMNS} FROM node_types", cursor, limit, node_type_out)


def schemas_for(session: Session, ids: set[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """The params_schema of each existing node type among `ids`."""
    if not ids:
        return {}
    rows = session.execute(
        text("SELECT id, params_schema FROM node_types WHERE id = ANY(:ids)"), {"ids": list(ids)}
    ).all()
    return {row.id: row.params_schema for row in rows}
