"""The client and the server's OpenAPI document describe the same API: every operation, its
method and path, and the fields of what it takes and answers."""

from typing import Any

import httpx
import pytest
from idmirror_client import models
from idmirror_client.calls import OPERATIONS

from tests.stack import Stack


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    spec: dict[str, Any] = httpx.get(f"{stack.base_url}/openapi.json").json()
    return spec


def test_the_client_has_every_operation_at_its_method_and_path(document: dict[str, Any]) -> None:
    served = {
        op["operationId"]: (method.upper(), path)
        for path, item in document["paths"].items()
        for method, op in item.items()
    }
    assert served == OPERATIONS


def _models() -> list[type[models.Answer | models.Body | models.AgentGraphUpdate]]:
    kinds = (models.Answer, models.Body, models.AgentGraphUpdate)
    found: list[type[models.Answer | models.Body | models.AgentGraphUpdate]] = [
        value
        for value in vars(models).values()
        if isinstance(value, type) and issubclass(value, kinds) and "schema_name" in vars(value)
    ]
    return [cls for cls in found if cls.schema_name != "Page"]


def test_each_model_has_the_fields_of_the_schema_it_mirrors(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    mirrored = _models()
    assert len(mirrored) > 20
    for cls in mirrored:
        schema = schemas[cls.schema_name]
        assert set(cls.model_fields) == set(schema["properties"]), cls.schema_name
        required = {name for name, f in cls.model_fields.items() if f.is_required()}
        if issubclass(cls, models.Answer):  # what the server always sends, the client needs
            assert required <= set(schema.get("required", [])), cls.schema_name
        else:  # what the server needs, the client asks for
            assert required == set(schema.get("required", [])), cls.schema_name
