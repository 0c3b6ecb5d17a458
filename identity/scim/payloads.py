"""SCIM payloads read with scim2-models, any resource type: a resource or a PatchOp checked,
and PATCH operations applied to a resource, every failure a SCIM error.

Microsoft Entra's PATCH dialect (a `remove` whose `value` says what to remove, an `add` or
`replace` through a filter no entry matches creating that entry) is a policy of its own,
applied only when the edge recognised Entra.
"""

import contextlib
from collections import OrderedDict
from functools import cache
from typing import Any, Literal, TypeVar

from pydantic import ValidationError
from scim2_models import Context, PatchOp, Resource, SCIMException, ScimObject, ScimPolicy

from identity.scim import errors

PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
Dialect = Literal["strict", "entra"]
POLICIES = {
    "strict": ScimPolicy(),
    "entra": ScimPolicy(remove_value_as_filter="apply", unmatched_path_filter="create"),
}
R = TypeVar("R", bound=Resource[Any])
M = TypeVar("M", bound=ScimObject)


def validated(model: type[M], body: dict[str, Any], context: Context) -> M:
    """`body` as a `model` in `context`; a SCIM error when it is not one."""
    try:
        return model.model_validate(body, scim_ctx=context)
    except ValidationError as exc:
        raise errors.from_validation(exc.errors()) from None
    except SCIMException as exc:
        raise errors.from_exception(exc) from None


@cache
def _patch_op(model: type[R]) -> type[PatchOp[R]]:
    # `PatchOp[model]` looks its class up anew each time, about a quarter of a parse.
    return PatchOp[model]  # type: ignore[valid-type]


def parse_patch(model: type[R], payload: dict[str, Any], dialect: Dialect) -> PatchOp[R]:
    """A PatchOp request body for a `model`, checked; a SCIM error when it is not valid."""
    with POLICIES[dialect]:
        return validated(_patch_op(model), payload, Context.RESOURCE_PATCH_REQUEST)


def operations_of(patch: PatchOp[R]) -> list[dict[str, Any]]:
    """A checked PatchOp's operations, as a job carries them."""
    return [op.model_dump(scim_ctx=Context.RESOURCE_PATCH_REQUEST) for op in patch.operations or []]


SETS = {"add", "replace"}  # the PATCH ops that set a value

# The shapes of PatchOps scim2-models accepted (the body's schemas, and each operation's op and
# path), with what it made of each operation's op and path. Providers send the same few shapes
# again and again with other values. The library's verdict on a PATCH whose every operation adds
# or replaces a string depends on its shape alone (a string value is read when it is applied, not
# when the request is checked; tests/identity/scim/test_patch_shapes.py holds it to that), so a
# shape accepted once is not parsed again. The most recently used shapes are kept.
_BODY_KEYS = {"schemas", "Operations"}
_OPERATION_KEYS = {"op", "path", "value"}
_SHAPES: OrderedDict[tuple[Any, ...], list[tuple[str, str]]] = OrderedDict()
SHAPES_KEPT = 512


def _shape(model: type[R], body: dict[str, Any], dialect: Dialect) -> tuple[Any, ...] | None:
    """What a PATCH body's verdict depends on when each operation sets a string; None when an
    operation does anything else."""
    operations = body.get("Operations")
    schemas = body.get("schemas")
    if body.keys() != _BODY_KEYS or not isinstance(operations, list) or not operations:
        return None
    shapes = []
    for op in operations:
        if not isinstance(op, dict) or op.keys() != _OPERATION_KEYS:
            return None
        verb, path, value = op["op"], op["path"], op["value"]
        if not (isinstance(verb, str) and verb.lower() in SETS and isinstance(path, str)):
            return None
        if not isinstance(value, str):
            return None
        shapes.append((verb, path))
    if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
        return None
    return (model, dialect, tuple(schemas), tuple(shapes))


def patch_operations(
    model: type[R], body: dict[str, Any], dialect: Dialect
) -> tuple[list[dict[str, Any]], PatchOp[R] | None]:
    """A PATCH body's operations as a job carries them, checked by scim2-models, and the PatchOp
    they were checked as (None when its shape was accepted before, and not parsed again)."""
    shape = _shape(model, body, dialect)
    if shape is not None and (seen := _SHAPES.get(shape)) is not None:
        with contextlib.suppress(KeyError):  # another thread may have just dropped it
            _SHAPES.move_to_end(shape)
        values = [op["value"] for op in body["Operations"]]
        return [
            {"op": verb, "path": path, "value": value}
            for (verb, path), value in zip(seen, values, strict=True)
        ], None
    patch = parse_patch(model, body, dialect)
    operations = operations_of(patch)
    given = [op.get("value") for op in body.get("Operations") or []]
    if shape is not None and [op.get("value") for op in operations] == given:
        _SHAPES[shape] = [(op["op"], op["path"]) for op in operations]
        if len(_SHAPES) > SHAPES_KEPT:
            _SHAPES.popitem(last=False)
    return operations, patch


def patched(
    model: type[R],
    resource: R,
    operations: list[dict[str, Any]],
    dialect: Dialect,
    checked: Any = None,
) -> R:
    """`resource` with the operations of a job applied, in order; `checked` is the PatchOp
    they were dumped from, when its request was checked in this process."""
    patch = checked if isinstance(checked, PatchOp) else None
    if patch is None:
        body = {"schemas": [PATCH_SCHEMA], "Operations": operations}
        patch = parse_patch(model, body, dialect)
    try:
        with POLICIES[dialect]:
            patch.patch(resource)
    except SCIMException as exc:
        raise errors.from_exception(exc) from None
    except ValidationError as exc:
        raise errors.from_validation(exc.errors()) from None
    return resource
