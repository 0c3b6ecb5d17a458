"""SCIM user writes of distinct users applied together give what one write after another gives,
and a batch a slug or userName breaks is applied one by one."""

import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from identity.access import OPERATOR, Actor
from identity.answers import Applied
from identity.appliers import BATCH_APPLIERS, apply_job
from identity.db import transaction
from identity.errors import IdmirrorError
from identity.keys import UserKey
from identity.ledger.apply import PendingJob, apply_jobs
from identity.scim.writes import create_user
from tests.identity.test_user_upserts import normalised

STORED = int(time.time() * 1_000_000)  # the version of what a case stores before the batch
LATER = STORED + 3_600_000_000
OLDER = 1
MINE = Actor("mine", None, admin=False)
OTHER = Actor("other", None, admin=False)
_PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass(frozen=True)
class Case:
    """A user as it stands before the batch (None: no user), and the batch's job for it."""

    kind: str
    stored: dict[str, Any] | None
    job: dict[str, Any]
    expected: str  # the outcome, or the error's code
    version: int = LATER
    owner: Actor = OPERATOR
    actor: Actor = OPERATOR


def fields(label: str, **profile: Any) -> dict[str, Any]:
    """A job's fields for a userName made of `label` (TWIN: the name of the twin's copy)."""
    name = f"{label}-{TWIN}"
    emails = [{"value": f"{name}@example.com", "primary": True}]
    profile = {"emails": emails, **profile}
    return {"user_name": name, "external_id": None, "active": True, "profile": profile}


def ops(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"operations": list(operations), "dialect": "strict", "if_match": None}


TWIN = "TWIN"
TITLE = {"op": "replace", "path": "title", "value": "Engineer"}
CASES = {
    "user.scim_create": {
        "new": Case("user.scim_create", None, {"fields": fields("new")}, "created"),
        "again": Case(
            "user.scim_create", fields("again"), {"fields": fields("again")}, "unchanged"
        ),
        "changed": Case(
            "user.scim_create", fields("chg"), {"fields": fields("chg", title="B")}, "updated"
        ),
        "theirs": Case(
            "user.scim_create",
            fields("theirs"),
            {"fields": fields("theirs", title="B")},
            "owned_by_another_integrator",
            owner=OTHER,
            actor=MINE,
        ),
        "new-for-an-integrator": Case(
            "user.scim_create", None, {"fields": fields("mine")}, "created", actor=MINE
        ),
    },
    "user.scim_replace": {
        "replaced": Case(
            "user.scim_replace", fields("rep"), {"fields": fields("rep", title="B")}, "updated"
        ),
        "same": Case("user.scim_replace", fields("same"), {"fields": fields("same")}, "unchanged"),
        "absent": Case("user.scim_replace", None, {"fields": fields("absent")}, "scim_not_found"),
        "older": Case(
            "user.scim_replace",
            fields("older"),
            {"fields": fields("older", title="B")},
            "superseded",
            version=OLDER,
        ),
        "if-match-of-another-version": Case(
            "user.scim_replace",
            fields("ifm"),
            {"fields": fields("ifm", title="B"), "if_match": 'W/"1"'},
            "precondition_failed",
        ),
        "if-match-of-this-version": Case(
            "user.scim_replace",
            fields("ifm-ok"),
            {"fields": fields("ifm-ok", title="B"), "if_match": f'W/"{STORED}"'},
            "updated",
        ),
        "theirs": Case(
            "user.scim_replace",
            fields("r-theirs"),
            {"fields": fields("r-theirs", title="B")},
            "owned_by_another_integrator",
            owner=OTHER,
            actor=MINE,
        ),
    },
    "user.scim_patch": {
        "patched": Case("user.scim_patch", fields("pat"), ops(TITLE), "updated"),
        "to-what-it-is": Case(
            "user.scim_patch", fields("same-p", title="Engineer"), ops(TITLE), "unchanged"
        ),
        "absent": Case("user.scim_patch", None, ops(TITLE), "scim_not_found"),
        "no-target": Case(
            "user.scim_patch",
            fields("nt"),
            ops({"op": "replace", "path": 'emails[type eq "home"].value', "value": "h@x.org"}),
            "no_target",
        ),
        "userName": Case(
            "user.scim_patch",
            fields("un"),
            ops({"op": "replace", "path": "userName", "value": f"un-renamed-{TWIN}"}),
            "updated",
        ),
    },
}


class Twin:
    """One copy of a kind's cases, with users and userNames of its own."""

    def __init__(self, kind: str, run: str, name: str) -> None:
        self.kind, self.name = kind, f"{name}-{run}"
        self.ids = {case: uuid.uuid4() for case in CASES[kind]}

    def named(self, value: Any) -> Any:
        """`value` with each userName and address made this twin's."""
        return json.loads(json.dumps(value).replace(TWIN, self.name))

    def store(self) -> None:
        for name, case in CASES[self.kind].items():
            if case.stored is not None:
                with transaction() as session:
                    payload = {"fields": self.named(case.stored)}
                    create_user(session, self.key(name), payload, STORED, case.owner)

    def key(self, name: str) -> UserKey:
        return UserKey(self.ids[name])

    def jobs(self) -> list[PendingJob]:
        return [
            PendingJob(
                uuid.uuid4(),
                f"user:{self.ids[name]}",
                1,
                case.kind,
                self.named(case.job),
                case.version,
                datetime.now(UTC),
                integrator=case.actor.integrator,
                admin=case.actor.admin,
            )
            for name, case in CASES[self.kind].items()
        ]

    def as_other(self, other: "Twin", value: Any) -> Any:
        text = json.dumps(value, default=str).replace(f"-{self.name}", f"-{other.name}")
        for name, user_id in self.ids.items():
            text = text.replace(str(user_id), str(other.ids[name]))
        return json.loads(text)

    def stored_rows(self, db: psycopg.Connection[Any]) -> dict[str, Any]:
        rows = db.execute(
            "SELECT id, email, slug, user_name, external_id, active, scim, version, owner "
            "FROM users WHERE id = ANY(%s)",
            (list(self.ids.values()),),
        ).fetchall()
        by_id = {row[0]: json.loads(json.dumps(row[1:], default=str)) for row in rows}
        return {name: by_id.get(user_id) for name, user_id in self.ids.items()}


@pytest.mark.parametrize("kind", list(CASES))
def test_scim_user_writes_applied_together_match_one_by_one(
    kind: str, domain: None, db: psycopg.Connection[Any]
) -> None:
    run = uuid.uuid4().hex[:8]
    together, alone = Twin(kind, run, "together"), Twin(kind, run, "alone")
    together.store()
    alone.store()
    before = together.stored_rows(db)

    with transaction() as session:
        outcomes = BATCH_APPLIERS[kind](session, together.jobs())
    one_by_one: list[Applied | IdmirrorError] = []
    for job in alone.jobs():
        with transaction() as session:
            try:
                one_by_one.append(apply_job(session, job))
            except IdmirrorError as exc:
                one_by_one.append(exc)

    got = [o.code if isinstance(o, IdmirrorError) else o.outcome for o in outcomes]
    expected = {name: case.expected for name, case in CASES[kind].items()}
    assert dict(zip(CASES[kind], got, strict=True)) == expected
    assert [normalised(o) for o in outcomes] == [
        alone.as_other(together, normalised(o)) for o in one_by_one
    ]
    after = together.stored_rows(db)
    assert after == {n: alone.as_other(together, r) for n, r in alone.stored_rows(db).items()}
    for name, case in CASES[kind].items():
        if case.expected not in ("created", "updated"):
            assert after[name] == before[name], f"{name} must leave its row alone"
        else:
            assert after[name] != before[name], f"{name} must write its row"


def test_creates_that_want_one_slug_are_applied_one_by_one_and_both_made(
    domain: None, db: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    # Ada.Lovelace@ and ada-lovelace@ give one slug: the statement that writes both breaks on
    # it, and the jobs are applied one by one, where the second slug is suffixed.
    run = uuid.uuid4().hex[:8]
    names = [f"Ada.Lovelace.{run}@Example.com", f"ada-lovelace-{run}@example.com"]
    jobs = [
        PendingJob(
            uuid.uuid4(),
            f"user:{uuid.uuid4()}",
            1,
            "user.scim_create",
            {"fields": {"user_name": name, "active": True}},
            LATER,
            datetime.now(UTC),
        )
        for name in names
    ]
    with caplog.at_level(logging.WARNING), transaction() as session:
        finished = apply_jobs(session, jobs, apply_job, BATCH_APPLIERS)
    assert [f.outcome for f in finished] == ["created", "created"]
    assert "applied one by one instead" in caplog.text
    slugs = [
        db.execute("SELECT slug FROM users WHERE id = %s", (job.key[5:],)).fetchone()
        for job in jobs
    ]
    assert slugs[0] == (f"ada-lovelace-{run}-example-com",)
    assert slugs[1] is not None and slugs[1][0].startswith(f"ada-lovelace-{run}-example-com-")
