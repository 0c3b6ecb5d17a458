"""Graph update requests: the five operations, every check that needs no database, and the job.

The checks run in the API before the job is accepted, so a malformed request fails at once and
is never queued; the worker reads the stored job back as a GraphUpdateJob. What needs the stored
graph (does the node exist, would this close a cycle) is checked by the worker, in
identity/graph/apply.py.
"""

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from identity.errors import EmptyUpdate, InvalidOperation, ValidationFailed
from identity.schemas import StrictBody

TempRef = Annotated[str, Field(min_length=1, max_length=128)]


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateNode(_Op):
    op: Literal["create_node"]
    node_type_id: uuid.UUID
    temp_ref_id: TempRef | None = None
    params_used: dict[str, Any] = Field(default_factory=dict)


class UpdateNode(_Op):
    op: Literal["update_node"]
    agent_node_id: uuid.UUID
    params_used: dict[str, Any]


class DeleteNode(_Op):
    op: Literal["delete_node"]
    agent_node_id: uuid.UUID


class _ConnectionOp(_Op):
    source_agent_node_id: uuid.UUID | None = None
    source_temp_ref_id: TempRef | None = None
    target_agent_node_id: uuid.UUID | None = None
    target_temp_ref_id: TempRef | None = None

    @model_validator(mode="after")
    def _exactly_one_reference_per_end(self) -> "_ConnectionOp":
        for end in ("source", "target"):
            given = [
                getattr(self, f"{end}_agent_node_id") is not None,
                getattr(self, f"{end}_temp_ref_id") is not None,
            ]
            if sum(given) != 1:
                raise ValueError(f"give exactly one of {end}_agent_node_id and {end}_temp_ref_id")
        return self


class CreateConnection(_ConnectionOp):
    op: Literal["create_connection"]


class DeleteConnection(_ConnectionOp):
    op: Literal["delete_connection"]


Operation = CreateNode | UpdateNode | DeleteNode | CreateConnection | DeleteConnection
_OPERATION: TypeAdapter[Operation] = TypeAdapter(Annotated[Operation, Field(discriminator="op")])


class AgentGraphUpdate(StrictBody):
    """POST/PATCH /v1/agents/{ref}/update. Operations are checked one by one, by index."""

    name: str | None = Field(None, min_length=1, max_length=120)
    description: str | None = Field(None, max_length=5000)
    visibility: Literal["public", "private"] | None = None
    operations: list[dict[str, Any]] | None = None

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """Operations are read as plain objects (parse_operations checks each by its index)
        but documented as the five operations they must be."""
        schema = handler(core_schema)
        operations = {"type": "array", "items": handler(_OPERATION.core_schema)}
        handler.resolve_ref_schema(schema)["properties"]["operations"] = {
            "anyOf": [operations, {"type": "null"}],
            "default": None,
            "title": "Operations",
        }
        return schema


def parse_operations(raw: list[dict[str, Any]], *, max_operations: int) -> list[Operation]:
    """Validate shapes and temp refs; raise InvalidOperation naming the failing op_index."""
    if len(raw) > max_operations:
        raise ValidationFailed(
            f"at most {max_operations} operations per request",
            errors=[{"loc": "body.operations", "message": f"at most {max_operations} items"}],
        )
    operations: list[Operation] = []
    defined: set[str] = set()
    for index, item in enumerate(raw):
        try:
            op = _OPERATION.validate_python(item)
        except ValidationError as exc:
            problems = [
                {"loc": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors()
            ]
            raise InvalidOperation(
                f"operation {index} is malformed: {problems[0]['message']}",
                op_index=index,
                errors=problems,
            ) from None
        match op:
            case CreateNode(temp_ref_id=str(ref)):
                if ref in defined:
                    raise InvalidOperation(f"temp_ref_id {ref!r} is defined twice", op_index=index)
                defined.add(ref)
            case CreateConnection() | DeleteConnection():
                for used in (op.source_temp_ref_id, op.target_temp_ref_id):
                    if used is not None and used not in defined:
                        raise InvalidOperation(
                            f"temp_ref_id {used!r} is used before a create_node defines it",
                            op_index=index,
                            temp_ref_id=used,
                        )
        operations.append(op)
    return operations


class GraphUpdateJob(BaseModel):
    """An agent.update job's payload as the ledger stores it, checked when it was accepted."""

    # Jobs recorded by earlier releases must still apply: keys this model does not know are
    # ignored, as they were when the payload was read as a plain dict.
    model_config = ConfigDict(extra="ignore")

    agent_id: str | None = None  # set when the request named the agent by id
    name: str | None = None
    description: str | None = None
    visibility: Literal["public", "private"] | None = None
    operations: list[Annotated[Operation, Field(discriminator="op")]] = Field(default_factory=list)

    def fields(self) -> dict[str, str]:
        """The agent columns the update sets: name, description, visibility, where given."""
        return self.model_dump(include={"name", "description", "visibility"}, exclude_none=True)

    def stored(self) -> dict[str, Any]:
        """The JSON the ledger keeps: the fields given and each operation without nulls."""
        return self.model_dump(mode="json", exclude_none=True)


def update_job(body: AgentGraphUpdate, *, max_operations: int) -> GraphUpdateJob:
    """The job of a checked update, or EmptyUpdate when it asks for nothing."""
    fields = body.model_dump(exclude={"operations"}, exclude_none=True)
    if not fields and not body.operations:
        raise EmptyUpdate("give at least one of name, description, visibility, operations")
    operations = parse_operations(body.operations or [], max_operations=max_operations)
    return GraphUpdateJob(**fields, operations=operations)
