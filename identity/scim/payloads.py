"""SCIM payloads read with scim2-models, any resource type: a resource or a PatchOp checked,
and PATCH operations applied to a resource, every failure a SCIM error.

Microsoft Entra's PATCH dialect (a `remove` whose `value` says what to remove, an `add` or
`replace` through a filter no entry matches creating that entry) is a policy of its own,
applied only when the edge recognised Entra.
"""

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
