"""What a write answers: timestamps as the wire has always carried them, the answers of writes
that have no resource to show, and what an applier did (`Applied`) with its result in the form
the ledger stores."""

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema

# `isoformat()`: an offset of `+00:00`, where pydantic's own serializer would write `Z`.
Timestamp = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]

UpsertOutcome = Literal["created", "updated", "unchanged", "superseded"]
DeleteOutcome = Literal["deleted", "unchanged", "superseded"]


def _absent(value: Any) -> bool:
    return value is None


class DeleteOut(BaseModel):
    """The answer to a delete; `id` is absent when there was nothing to delete."""

    id: str | None = Field(None, exclude_if=_absent)
    outcome: DeleteOutcome


class SupersededOut(BaseModel):
    """The answer to an upsert that a newer delete superseded, when no row is left to show."""

    id: str | None = Field(None, exclude_if=_absent)
    created: bool | None = Field(None, exclude_if=_absent)
    outcome: Literal["superseded"] = "superseded"


def stored(model: type[BaseModel], row: Any, **extra: Any) -> dict[str, Any]:
    """A result row (with `extra` fields) as `model`, in the JSON form the ledger stores.

    Validating the row's mapping in one call is the cheap way to build a model on the
    worker's hot path: building it field by field in Python costs several times as much."""
    return model.model_validate({**row._mapping, **extra}).model_dump(mode="json")


@dataclass(frozen=True)
class Applied:
    """What an applier did: the outcome and the body the client is answered with."""

    outcome: str
    result: dict[str, Any]


def upserted(written: Any, current: Any, version: int, answer: type[BaseModel]) -> Applied:
    """The outcome of a conditional upsert, its result in the form of `answer`: `written` is
    the row it returned (None when it wrote nothing), `current` the row as it was, `version`
    the job's."""
    if written is not None:
        outcome = "created" if written.inserted else "updated"
        return Applied(outcome, stored(answer, written, created=written.inserted, outcome=outcome))
    outcome = "superseded" if current.version > version else "unchanged"
    return Applied(outcome, stored(answer, current, created=False, outcome=outcome))
