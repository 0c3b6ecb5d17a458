"""Path parameters and request bodies as the OpenAPI document shows them: formats, patterns
and examples.

A path parameter's format is documented, not enforced by the framework: a malformed id keeps
its own answer (`400 invalid_user_id`, `404 job_not_found`, ...), never a generic 422.
"""

from typing import Annotated, Any

from fastapi import Body, Path, Query
from fastapi.openapi.models import Example

from identity.graph.operations import AgentGraphUpdate
from identity.keys import AGENT_ID_RE, SLUG_RE
from identity.node_types import NodeTypeUpsert
from identity.schemas import AgentUpsert, UserUpsert

_SLUG = SLUG_RE.pattern.strip("^$")
_KEY = f"{_SLUG}@{_SLUG}"
_UUID: dict[str, Any] = {"format": "uuid"}

# PostgreSQL text cannot hold the NUL character: a filter with one is refused, not sent.
NO_NUL = r"^[^\x00]*$"


def text_filter(max_length: int, description: str) -> Any:
    """An optional query parameter compared with stored text."""
    return Query(None, max_length=max_length, pattern=NO_NUL, description=description)


USER_ID = "6f1c2a52-3d1e-4c8a-9a4b-2f4f0c9d7e11"
NODE_TYPE_ID = "3b0e6c1a-9f2d-4d8e-a7b5-1c4f2e9d8a70"

UserId = Annotated[
    str,
    Path(
        description="The integrator's UUID for the user (else `400 invalid_user_id`)",
        json_schema_extra=_UUID,
        examples=[USER_ID],
    ),
]
AgentKeyPath = Annotated[
    str,
    Path(
        description="`{slug}@{user_slug}` (else `400 invalid_agent_key`)",
        json_schema_extra={"pattern": f"^{_KEY}$"},
        examples=["scout@govind"],
    ),
]
AgentRefPath = Annotated[
    str,
    Path(
        description="An agent key, `{slug}@{user_slug}`, or an agent id, `agt_` and 12 "
        "letters or digits (else `400 invalid_agent_key` / `400 invalid_agent_ref`)",
        json_schema_extra={"pattern": f"^(?:{_KEY}|{AGENT_ID_RE.pattern.strip('^$')})$"},
        examples=["scout@govind"],
    ),
]
NodeTypeId = Annotated[
    str,
    Path(
        description="The integrator's UUID for the node type (else `400 invalid_node_type_id`)",
        json_schema_extra=_UUID,
        examples=[NODE_TYPE_ID],
    ),
]
JobId = Annotated[
    str,
    Path(
        description="The job's UUID (anything else names no job: `404 job_not_found`)",
        json_schema_extra=_UUID,
        examples=["5d8e0f2a-7b1c-4e39-a6d4-0c9b8e7f6a51"],
    ),
]
BackfillId = Annotated[
    str,
    Path(
        description="The backfill's UUID (anything else: `404 backfill_not_found`)",
        json_schema_extra=_UUID,
        examples=["0c7d1e5a-2b3f-4a6c-9d8e-1f2a3b4c5d6e"],
    ),
]

UserBody = Annotated[
    UserUpsert,
    Body(
        openapi_examples={
            "user": Example(
                summary="A user on the pro plan",
                value={"email": "govind@example.com", "slug": "govind", "plan": "pro"},
            ),
            "versioned": Example(
                summary="With the source's own time and metadata",
                value={
                    "email": "ada@example.com",
                    "slug": "ada",
                    "metadata": {"team": "research"},
                    "external_owner": "crm-42",
                    "source_updated_at": "2025-06-01T10:15:02.118204Z",
                },
            ),
        }
    ),
]
AgentBody = Annotated[
    AgentUpsert,
    Body(
        openapi_examples={
            "agent": Example(
                summary="An agent with a webhook",
                value={
                    "display_name": "Scout",
                    "webhook_url": "https://hooks.example.com/scout",
                    "metadata": {"team": "research"},
                },
            ),
            "minimal": Example(summary="Only what is required", value={"display_name": "Scribe"}),
        }
    ),
]
NodeTypeBody = Annotated[
    NodeTypeUpsert,
    Body(
        openapi_examples={
            "http-call": Example(
                summary="A node type whose params need a URL",
                value={
                    "name": "http-call",
                    "description": "Calls a URL",
                    "params_schema": {
                        "type": "object",
                        "required": ["url"],
                        "properties": {
                            "url": {"type": "string"},
                            "retries": {"type": "integer"},
                        },
                    },
                },
            )
        }
    ),
]
GraphUpdateBody = Annotated[
    AgentGraphUpdate,
    Body(
        openapi_examples={
            "graph": Example(
                summary="Two nodes and a connection between them, named by temp refs",
                value={
                    "name": "Scribe",
                    "operations": [
                        {
                            "op": "create_node",
                            "node_type_id": NODE_TYPE_ID,
                            "temp_ref_id": "fetch",
                            "params_used": {"url": "https://example.com/a"},
                        },
                        {
                            "op": "create_node",
                            "node_type_id": NODE_TYPE_ID,
                            "temp_ref_id": "notify",
                            "params_used": {"url": "https://example.com/b"},
                        },
                        {
                            "op": "create_connection",
                            "source_temp_ref_id": "fetch",
                            "target_temp_ref_id": "notify",
                        },
                    ],
                },
            ),
            "fields": Example(
                summary="Only the agent's own fields",
                value={"description": "Writes things down", "visibility": "public"},
            ),
        }
    ),
]
