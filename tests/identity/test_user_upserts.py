"""User upserts of distinct keys applied together give what one upsert_user after another gives,
and the drain applies them together."""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, text

from identity.access import OPERATOR, Actor
from identity.answers import Applied
from identity.appliers import apply_job, apply_user_upserts
from identity.db import get_engine, transaction
from identity.errors import IdmirrorError, SlugTaken
from identity.keys import UserKey
from identity.ledger.apply import PendingJob
from identity.ledger.jobs import Submission, get_job
from identity.schemas import UserUpsert
from identity.users import delete_user, upsert_user
from tests.conftest import new_slug
from tests.identity.ledger.test_drain import accept_all, drain_all

STORED = int(time.time() * 1_000_000)  # the version of what the cases store before the batch
LATER = STORED + 3_600_000_000
OLDER = 1
MINE = Actor("mine", None, admin=False)
OTHER = Actor("other", None, admin=False)
PRO = {"plan": "pro"}


@dataclass(frozen=True)
class Case:
    """A user as it stands before the batch, and the batch's job for it.

    Slugs are labels, made unique per run and twin: `stored` is the slug the user is stored
    with (None: no user), `slug` the one the job asks for."""

    stored: str | None
    slug: str
    expected: str  # the outcome, or the error's code
    version: int = LATER
    changes: dict[str, Any] = field(default_factory=dict)
    owner: Actor = OPERATOR  # who stored the user
    actor: Actor = OPERATOR  # who sends the job
    deleted: bool = False  # the stored user was deleted since, at STORED


# In the batch's order: slugs taken or given up by a case count for the cases after it.
CASES = {
    "new": Case(None, "new", "created"),
    "same": Case("same", "same", "unchanged"),
    "changed": Case("changed", "changed", "updated", changes={"email": "b@example.com"}),
    "metadata-changed": Case("meta", "meta", "updated", changes={"metadata": {"team": "b"}}),
    "renamed": Case("renamed", "renamed-2", "updated"),
    "older": Case("older", "older", "superseded", version=OLDER, changes=PRO),
    "older-rename-to-a-taken-slug": Case("older-rename", "same", "superseded", version=OLDER),
    "older-than-its-delete": Case("gone", "gone", "superseded", version=OLDER, deleted=True),
    "newer-than-its-delete": Case("back", "back", "created", deleted=True),
    "another-integrators": Case(
        "theirs", "theirs", "owned_by_another_integrator", changes=PRO, owner=OTHER, actor=MINE
    ),
    "own-integrators": Case("mine", "mine", "updated", changes=PRO, owner=MINE, actor=MINE),
    "admin-on-another-integrators": Case("admin", "admin", "updated", changes=PRO, owner=OTHER),
    "new-for-an-integrator": Case(None, "new-mine", "created", actor=MINE),
    "slug-of-a-stored-user": Case(None, "same", "slug_taken"),
    "first-to-claim-a-slug": Case(None, "claimed", "created"),
    "second-to-claim-it": Case(None, "claimed", "slug_taken"),
    "gives-up-a-slug": Case("given", "given-2", "updated"),
    "takes-it-after": Case(None, "given", "created"),
    "takes-a-slug-before-it-is-given-up": Case(None, "later", "slug_taken"),
    "gives-it-up-after": Case("later", "later-2", "updated"),
    "swaps-slugs": Case("x", "y", "slug_taken"),
    "with-another": Case("y", "x", "slug_taken"),
}


class Twin:
    """One copy of every case, with users and slugs of its own."""

    def __init__(self, run: str, name: str) -> None:
        self.name = f"{name}-{run}"
        self.ids = {case: uuid.uuid4() for case in CASES}

    def slug(self, label: str) -> str:
        return f"{label}-{self.name}"

    def body(self, label: str, **changes: Any) -> UserUpsert:
        fields = {"email": "a@example.com", "slug": self.slug(label), "metadata": {"team": "a"}}
        return UserUpsert.model_validate({**fields, **changes})

    def store(self) -> None:
        """Put every case's user in the state its case starts from."""
        for name, case in CASES.items():
            if case.stored is None:
                continue
            key = UserKey(self.ids[name])
            with transaction() as session:
                upsert_user(session, key, self.body(case.stored), STORED, case.owner)
                if case.deleted:
                    delete_user(session, key, STORED)

    def jobs(self) -> list[PendingJob]:
        return [
            PendingJob(
                uuid.uuid4(),
                f"user:{self.ids[name]}",
                1,
                "user.upsert",
                self.body(case.slug, **case.changes).model_dump(mode="json"),
                case.version,
                datetime.now(UTC),
                integrator=case.actor.integrator,
                admin=case.actor.admin,
            )
            for name, case in CASES.items()
        ]

    def as_other(self, other: "Twin", value: Any) -> Any:
        """`value` with this twin's ids and slugs written as `other`'s, for comparing."""
        text = json.dumps(value, default=str).replace(f"-{self.name}", f"-{other.name}")
        for name, user_id in self.ids.items():
            text = text.replace(str(user_id), str(other.ids[name]))
        return json.loads(text)

    def stored_rows(self, db: psycopg.Connection[Any]) -> dict[str, Any]:
        rows = db.execute(
            "SELECT id, email, slug, plan, metadata, external_owner, version, owner, updated_at, "
            "xmin::text FROM users WHERE id = ANY(%s)",
            (list(self.ids.values()),),
        ).fetchall()
        by_id = {row[0]: row for row in rows}
        return {name: by_id.get(user_id) for name, user_id in self.ids.items()}


def normalised(outcome: Applied | IdmirrorError) -> dict[str, Any]:
    """An outcome without the times at which it was written."""
    if isinstance(outcome, IdmirrorError):
        return {"error": outcome.envelope()}
    result = {k: v for k, v in outcome.result.items() if k not in ("created_at", "updated_at")}
    return {"outcome": outcome.outcome, "result": result}


def comparable(row: Any) -> Any:
    """A stored row without what a write sets from the clock and the transaction."""
    return None if row is None else json.loads(json.dumps(row[:8], default=str))


def test_user_upserts_applied_together_match_one_by_one(
    domain: None, db: psycopg.Connection[Any]
) -> None:
    run = uuid.uuid4().hex[:8]
    together, alone = Twin(run, "together"), Twin(run, "alone")
    together.store()
    alone.store()
    before = together.stored_rows(db)

    with transaction() as session:
        outcomes = apply_user_upserts(session, together.jobs())
    one_by_one: list[Applied | IdmirrorError] = []
    for job in alone.jobs():
        with transaction() as session:
            try:
                one_by_one.append(apply_job(session, job))
            except IdmirrorError as exc:
                one_by_one.append(exc)

    got = [o.code if isinstance(o, IdmirrorError) else o.outcome for o in outcomes]
    assert dict(zip(CASES, got, strict=True)) == {n: c.expected for n, c in CASES.items()}
    assert [normalised(o) for o in outcomes] == [
        alone.as_other(together, normalised(o)) for o in one_by_one
    ]
    after = together.stored_rows(db)
    assert {n: comparable(r) for n, r in after.items()} == {
        n: alone.as_other(together, comparable(r)) for n, r in alone.stored_rows(db).items()
    }

    by_name = dict(zip(CASES, outcomes, strict=True))
    assert after["same"] == before["same"], "an identical body must not rewrite the row"
    for name in ("older", "another-integrators", "slug-of-a-stored-user", "swaps-slugs"):
        assert after[name] == before[name], f"{name} must leave its row alone"
    assert after["changed"][1] == "b@example.com"
    assert after["metadata-changed"][4] == {"team": "b"}
    assert after["renamed"][2] == together.slug("renamed-2")
    assert after["takes-it-after"][2] == together.slug("given")
    assert after["older-than-its-delete"] is None
    assert after["new-for-an-integrator"][7] == "mine"
    assert after["admin-on-another-integrators"][7] == "other"
    older = by_name["older"]
    assert isinstance(older, Applied) and older.result["plan"] == "free"  # the stored one stays
    assert isinstance(by_name["new"], Applied) and by_name["new"].result["created"] is True
    gone = by_name["older-than-its-delete"]
    assert isinstance(gone, Applied)
    assert gone.result == {
        "id": str(together.ids["older-than-its-delete"]),
        "created": False,
        "outcome": "superseded",
    }


def test_a_slug_taken_after_it_was_read_is_refused_as_slug_taken(
    domain: None, database_url: str
) -> None:
    # The slug check reads who holds each slug first; a user that another key's write creates
    # in between is met by the unique index, and the upsert still answers slug_taken.
    slug = new_slug("race")
    with psycopg.connect(database_url) as other:
        other.execute(
            "INSERT INTO users (id, email, slug, plan, version, created_at, updated_at) "
            "VALUES (%s, 'r@example.com', %s, 'free', 1, now(), now())",
            (uuid.uuid4(), slug),
        )
        commit = threading.Timer(0.5, other.commit)  # while the upsert waits on the index
        commit.start()
        with transaction() as session:
            body = UserUpsert(email="a@example.com", slug=slug)
            with pytest.raises(SlugTaken):
                upsert_user(session, UserKey(uuid.uuid4()), body, LATER)
            assert session.execute(text("SELECT 1")).scalar() == 1  # its transaction goes on
        commit.join()


@contextmanager
def user_inserts() -> Iterator[list[str]]:
    """The statements that insert into users, as this process runs them."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().startswith("INSERT INTO users"):
            seen.append(statement)

    engine = get_engine()
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


def test_the_drain_applies_user_upserts_together_in_each_keys_order(
    domain: None, caplog: pytest.LogCaptureFixture
) -> None:
    run = uuid.uuid4().hex[:8]
    holder = Submission(f"user:{uuid.uuid4()}", "user.upsert", body(f"held-{run}"))
    accept_all([holder])
    drain_all()
    keys = [f"user:{uuid.uuid4()}" for _ in range(10)]
    subs = [
        Submission(key, "user.upsert", body(f"u{i}-{run}", email=f"v{n}@example.com"))
        for n in range(3)
        for i, key in enumerate(keys)
    ]
    taken = Submission(f"user:{uuid.uuid4()}", "user.upsert", body(f"held-{run}"))
    ids = accept_all([*subs, taken])
    with user_inserts() as inserts:
        assert drain_all() == len(ids)  # here, not by the shared worker: the count is ours

    with transaction() as session:
        jobs = [get_job(session, job_id).model_dump(mode="json") for job_id in ids]
    by_key: dict[str, list[str]] = {}
    for job in jobs[:-1]:
        by_key.setdefault(job["key"], []).append(job["outcome"])
    assert list(by_key.values()) == [["created", "updated", "updated"]] * len(keys)
    assert all(job["result"]["email"] == "v2@example.com" for job in jobs[-11:-1])
    assert jobs[-1]["status"] == "failed" and jobs[-1]["error"]["code"] == "slug_taken"
    assert len(inserts) == 3, "one statement for each round of distinct keys"
    assert "one by one instead" not in caplog.text


def body(slug: str, **changes: Any) -> dict[str, Any]:
    return {"email": "a@example.com", "slug": slug, **changes}
