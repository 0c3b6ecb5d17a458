"""A PATCH that only sets plain string attributes is stored as scim2-models would patch it."""

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from identity.scim.payloads import Dialect, operations_of, parse_patch, patched
from identity.scim.users import ScimUser, fields_of, plainly_patched, to_scim
from tests.identity.scim.test_answers import BODIES, row_of

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def v1_row(email: str) -> dict[str, Any]:
    """A user written only through /v1: no SCIM columns, its email in `email`."""
    at = datetime(2026, 12, 3, tzinfo=UTC)
    return {
        "id": "0b6c1f8e-8f1e-4b8e-9a57-3d3c2f0f9e01",
        "email": email,
        "slug": "ada",
        "version": 1,
        "created_at": at,
        "updated_at": at,
        "active": None,
        "user_name": None,
        "external_id": None,
        "scim": None,
    }


ROWS = {name: row_of(body, as_result=False) for name, body in BODIES.items()}
ROWS |= {
    "v1": v1_row("Ada@Example.COM"),
    "v1-unicode": v1_row("ünï@exämple.com"),
    "v1-no-email": v1_row(""),
}
OPERATIONS: dict[str, list[dict[str, Any]]] = {
    "okta-replace": [{"op": "replace", "path": "displayName", "value": "Ada L."}],
    "entra-capitalised": [{"op": "Replace", "path": "title", "value": "Countess"}],
    "add-case-insensitive": [{"op": "add", "path": "DISPLAYNAME", "value": "  spaced  "}],
    "empty-string": [{"op": "replace", "path": "nickName", "value": ""}],
    "several": [
        {"op": "replace", "path": "locale", "value": "not a locale"},
        {"op": "add", "path": "timezone", "value": "Mars/Olympus"},
        {"op": "replace", "path": "userType", "value": "Contractor"},
        {"op": "replace", "path": "preferredLanguage", "value": "x" * 2000},
        {"op": "replace", "path": "displayName", "value": "first"},
        {"op": "replace", "path": "displayName", "value": "last wins"},
    ],
}


def by_library(row: dict[str, Any], operations: list[dict[str, Any]]) -> Any:
    """The fields scim2-models gives: the row as a User, the checked PatchOp applied."""
    body = {"schemas": [PATCH_SCHEMA], "Operations": operations}
    dialect: Dialect = "entra" if any(op["op"][0].isupper() for op in operations) else "strict"
    checked = parse_patch(ScimUser, body, dialect)
    user = patched(ScimUser, to_scim(row, ""), operations_of(checked), dialect, checked)
    return fields_of(user), operations_of(checked)


@pytest.mark.parametrize("operations", list(OPERATIONS))
@pytest.mark.parametrize("row", list(ROWS))
def test_a_plain_patch_stores_what_scim2_models_gives(row: str, operations: str) -> None:
    wanted, stored_operations = by_library(ROWS[row], OPERATIONS[operations])
    got = plainly_patched(ROWS[row], stored_operations)
    assert got is not None
    assert got.model_dump() == wanted.model_dump()


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "remove", "path": "displayName"},
        {"op": "replace", "path": "displayName", "value": None},
        {"op": "replace", "path": "displayName", "value": 7},
        {"op": "replace", "path": "active", "value": False},
        {"op": "replace", "path": "userName", "value": "taken@example.com"},
        {"op": "replace", "path": "externalId", "value": "x"},
        {"op": "replace", "path": "name.givenName", "value": "Ada"},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "a@b.c"},
        {"op": "replace", "path": "urn:ietf:params:scim:schemas:core:2.0:User:title", "value": "x"},
        {"op": "replace", "value": {"displayName": "no path"}},
    ],
    ids=lambda op: f"{op['op']} {op.get('path')} {op.get('value')!r}",
)
def test_any_other_patch_is_left_to_scim2_models(operation: dict[str, Any]) -> None:
    plain = {"op": "replace", "path": "title", "value": "Countess"}
    assert plainly_patched(ROWS["okta"], [operation]) is None
    assert plainly_patched(ROWS["okta"], [plain, operation]) is None


def test_an_address_scim2_models_refuses_fails_the_same_way() -> None:
    row = v1_row("not-an-address")
    operations = OPERATIONS["okta-replace"]
    with pytest.raises(ValidationError):
        by_library(row, operations)
    with pytest.raises(ValidationError):
        plainly_patched(row, operations)
