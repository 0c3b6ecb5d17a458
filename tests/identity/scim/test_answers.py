"""A user as answered without validating it again is what scim2-models makes of it."""

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from scim2_models import Context

from identity.scim.payloads import validated
from identity.scim.resources import dump
from identity.scim.users import (
    ENTERPRISE_SCHEMA,
    USER_SCHEMA,
    ScimUser,
    answered,
    fields_of,
    to_scim,
)

BODIES: dict[str, dict[str, Any]] = {
    "bare": {"schemas": [USER_SCHEMA], "userName": "bare"},
    "okta": {
        "schemas": [USER_SCHEMA],
        "userName": "Ada.Lovelace@Example.com",
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"primary": True, "value": "Ada.Lovelace@Example.com", "type": "work"}],
        "displayName": "Ada Lovelace",
        "locale": "en-US",
        "externalId": "00u1",
        "groups": [],
        "password": "never-kept",
        "active": True,
    },
    "entra": {
        "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
        "externalId": "grace",
        "userName": "grace@example.org",
        "active": "False",
        "displayName": "Grace Hopper",
        "emails": [{"primary": True, "type": "work", "value": "grace@example.org"}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Grace Hopper", "familyName": "Hopper", "givenName": "Grace"},
        "roles": [],
        ENTERPRISE_SCHEMA: {
            "department": "Research",
            "employeeNumber": "42",
            "manager": {"value": "m-1", "$ref": "../Users/m-1"},
        },
    },
    "empty-values": {
        "schemas": [USER_SCHEMA],
        "userName": "empty",
        "externalId": "",
        "displayName": "",
        "name": {},
        "phoneNumbers": [],
        "emails": [{"value": "e@example.com", "display": ""}],
    },
    "many-values": {
        "schemas": [USER_SCHEMA],
        "userName": "many",
        "emails": [{"value": "a@example.com", "type": "home"}, {"value": "b@example.com"}],
        "phoneNumbers": [{"value": "+1 555 0100", "type": "work", "primary": True}],
        "addresses": [{"streetAddress": "1 Main St", "locality": "X", "type": "work"}],
        "title": "Engineer",
        "timezone": "Europe/Paris",
    },
}


def row_of(body: dict[str, Any], *, as_result: bool) -> dict[str, Any]:
    """The row a SCIM create of `body` stores, or the job result that holds it (times as
    text)."""
    fields = fields_of(validated(ScimUser, body, Context.RESOURCE_CREATION_REQUEST))
    created = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
    updated = datetime(2026, 12, 3, 12, 0, 1, 250_000, tzinfo=UTC)
    row = {
        "id": uuid.uuid4(),
        "email": fields.email(),
        "slug": "slug-1",
        "version": 1_764_763_200_000_000,
        "created_at": created,
        "updated_at": updated,
        "active": fields.active,
        "user_name": fields.user_name,
        "external_id": fields.external_id,
        "scim": fields.profile,
    }
    if as_result:
        row |= {"id": str(row["id"]), "created_at": created.isoformat(), "updated_at": str(updated)}
    return row


@pytest.mark.parametrize("as_result", [False, True], ids=["row", "result"])
@pytest.mark.parametrize("body", list(BODIES))
def test_a_user_is_answered_as_scim2_models_dumps_it(body: str, as_result: bool) -> None:
    row = row_of(BODIES[body], as_result=as_result)
    assert answered(row, "https://idm.example") == dump(to_scim(row, "https://idm.example"))


def test_a_user_written_through_v1_has_its_email_read_as_scim_reads_it() -> None:
    created = datetime(2026, 12, 3, tzinfo=UTC)
    row = {
        "id": uuid.uuid4(),
        "email": "Ada@Example.COM",
        "slug": "ada",
        "version": 1,
        "created_at": created,
        "updated_at": created,
        "active": None,
        "user_name": None,
        "external_id": None,
        "scim": None,
    }
    got = answered(row, "")
    assert got == dump(to_scim(row, ""))
    assert got["userName"] == "ada"
    assert got["emails"][0]["value"] == "Ada@example.com"  # the domain as an address reads it
