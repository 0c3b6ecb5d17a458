"""A PATCH of a shape scim2-models accepted before is not parsed again, and gets the operations
parsing it would give."""

import contextlib
from typing import Any

import pytest

from identity.scim import payloads
from identity.scim.agents import ScimAgent
from identity.scim.errors import ScimError
from identity.scim.payloads import Dialect, operations_of, parse_patch, patch_operations
from identity.scim.users import ENTERPRISE_SCHEMA, ScimUser

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
PATHS = [
    "displayName",
    "DISPLAYNAME",
    "title",
    "active",
    "userName",
    "externalId",
    "name",
    "name.givenName",
    "emails",
    'emails[type eq "work"].value',
    'emails[type eq "work"]',
    "id",
    "meta.created",
    "schemas",
    "groups",
    "password",
    "nosuch",
    "emails[",
    f"{ENTERPRISE_SCHEMA}:department",
    f"{ENTERPRISE_SCHEMA}:manager",
    f"{ENTERPRISE_SCHEMA}",
    "urn:ietf:params:scim:schemas:core:2.0:User:title",
]
VALUES = ["x", "", "False", "true", '{"value": "a"}', "a@example.com", "ünï", "x" * 3000]


def body(*operations: tuple[str, str, Any]) -> dict[str, Any]:
    return {
        "schemas": [PATCH_SCHEMA],
        "Operations": [{"op": op, "path": path, "value": value} for op, path, value in operations],
    }


def verdict(dialect: Dialect, patch: dict[str, Any]) -> Any:
    """What parsing the body gives: its operations, or its error's type and scimType."""
    try:
        return operations_of(parse_patch(ScimUser, patch, dialect))
    except ScimError as exc:
        return type(exc).__name__, exc.scim_type


@pytest.mark.parametrize("dialect", ["strict", "entra"])
@pytest.mark.parametrize("op", ["add", "replace", "Replace"])
@pytest.mark.parametrize("path", PATHS)
def test_setting_a_string_is_judged_by_its_path_whatever_the_string(
    dialect: Dialect, op: str, path: str
) -> None:
    verdicts = [verdict(dialect, body((op, path, value))) for value in VALUES]
    accepted = [isinstance(v, list) for v in verdicts]
    assert len(set(accepted)) == 1, list(zip(VALUES, verdicts, strict=True))
    if not accepted[0]:
        assert len(set(verdicts)) == 1, list(zip(VALUES, verdicts, strict=True))
        return
    # Accepted: the same op and path whatever the string, and the string kept as it came.
    wanted = [[{**verdicts[0][0], "value": value}] for value in VALUES]
    assert verdicts == wanted


@pytest.fixture(autouse=True)
def no_shapes_kept() -> None:
    payloads._SHAPES.clear()


@pytest.mark.parametrize("dialect", ["strict", "entra"])
def test_a_shape_seen_again_is_not_parsed_and_gives_what_parsing_gives(dialect: Dialect) -> None:
    first = body(("Replace", "displayName", "Ada"), ("add", "title", "Countess"))
    again = body(("Replace", "displayName", "Grace"), ("add", "title", ""))
    operations, checked = patch_operations(ScimUser, first, dialect)
    assert checked is not None and operations == verdict(dialect, first)
    operations, checked = patch_operations(ScimUser, again, dialect)
    assert checked is None  # taken from the shape
    assert operations == verdict(dialect, again)


@pytest.mark.parametrize(
    "patch",
    [
        body(("replace", "displayName", 7)),
        body(("replace", "name", {"givenName": "Ada"})),
        body(("remove", "displayName", "x")),
        {**body(("replace", "displayName", "x")), "id": "1"},
        {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": "x"}]},
    ],
    ids=["number", "object", "remove", "more-keys", "no-path"],
)
def test_only_operations_setting_strings_have_their_shape_kept(patch: dict[str, Any]) -> None:
    with contextlib.suppress(ScimError):
        patch_operations(ScimUser, patch, "strict")
    assert not payloads._SHAPES


def test_a_refused_shape_is_refused_every_time() -> None:
    for value in ("a", "b"):
        with pytest.raises(ScimError):
            patch_operations(ScimUser, body(("replace", "id", value)), "strict")
    assert not payloads._SHAPES


def test_shapes_are_kept_per_resource_type_and_dialect() -> None:
    patch = body(("replace", "displayName", "x"))
    patch_operations(ScimUser, patch, "strict")
    assert patch_operations(ScimUser, patch, "entra")[1] is not None
    assert patch_operations(ScimAgent, patch, "strict")[1] is not None
    assert len(payloads._SHAPES) == 3


def test_the_least_recently_used_shape_goes_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payloads, "SHAPES_KEPT", 2)
    one, two, three = (body(("replace", path, "x")) for path in ("title", "locale", "nickName"))
    patch_operations(ScimUser, one, "strict")
    patch_operations(ScimUser, two, "strict")
    patch_operations(ScimUser, one, "strict")  # used again: `two` is now the oldest
    patch_operations(ScimUser, three, "strict")
    assert patch_operations(ScimUser, one, "strict")[1] is None
    assert patch_operations(ScimUser, two, "strict")[1] is not None
