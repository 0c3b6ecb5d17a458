"""Recognising backfill lines that an earlier backfill applied, without reading them again.

A user or agent row keeps the digest of the backfill line that last wrote it (`line_digest`: the
chunk apply sets it, every other write clears it through the shared ON CONFLICT clause). So a
line whose row still holds its digest, and is not newer than the run's snapshot, would be
classified `unchanged` by the chunk apply: same fields, nothing newer. The receiver asks
Postgres about a part of the input at once (`ask`, then an `Asker`), counts those lines as
unchanged, and validates, stores and applies only the others. Every line of such an upload
passes here, so the work per line is kept to a regex, a digest and a tuple (no decoding, no
object of a class); each statement takes the part's keys and digests as two strings and answers
one character per line, in line order. A part's statements are sent without waiting for their
answer (psycopg's pipeline mode), on one of two connections in turn: Postgres looks up two parts
at once while the receiver reads the part before them.

What keeps the verdict the one the chunk apply would give:
- the digest covers the line's bytes, the key it wrote and what its validity depends on
  (digests.py);
- a line is known only to the writer the chunk apply would let write its row: an admin, or the
  integrator that owns the user (or the agent's user), as the apply checks before anything else;
- a line takes this path only if its key has not come earlier in the input (a Bloom filter of
  the keys seen: a false positive merely sends a line the long way);
- an agent is found through its owner's slug, so an agent line whose user slug an earlier user
  line of the input may give or take (the line's slug and the user's stored one) goes the long
  way too; a user line read without a lookup turns the agent path off for the rest of the run.

Where the verdict can differ (docs/backfills.md): a user line that comes after agent lines does
not reach back (agent lines counted before it were matched by the slugs of that moment, as agent
chunks applied early are, where lines still buffered would be matched after every user); and a
known line whose key comes again later counts unchanged where one chunk holding both would count
it superseded (the row ends the same).

Mirror runs and dry runs read every line (they need the input's items themselves). When a part
of agent lines finds none known (a first load), lookups back off, skipping up to 32 parts, and
return after the first part that finds some.
"""

import re
from collections import Counter
from collections.abc import Callable, Iterator, Sized
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import xxhash
from rbloom import Bloom
from sqlalchemy import TextClause, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from identity.access import Actor
from identity.backfill.digests import SEEDS, name_of

SEEN_CAPACITY = 2_000_000  # keys; past it the filter's false positives grow (2.4 MB)
MOVING_CAPACITY = 500_000  # user slugs (0.6 MB)
MAX_BACKOFF = 32
# Connections that look up parts at once, each one part at a time: a part's lookup costs
# Postgres more than reading the part costs the receiver, and with one connection the receiver
# of a re-sent upload waited for answers for about two fifths of its time.
LANES = 2
# How a receiver opens a transaction.
Transaction = Callable[[], AbstractContextManager[Session]]

# A key's text, not its rules: a row holds a line's digest only if that line wrote it as the key
# the digest covers (digests.py), so a key taken from the line's text that is not the one the
# line was applied as finds no row holding the candidate's digest. A looser pattern only sends
# more lines the long way, and costs less to match than SLUG_RE's.
_SLUG = rb"[a-z0-9-]{1,64}"  # a slug's characters and length (identity/keys.py)
_AGENT_KEY = re.compile(rb'"key"\s*:\s*"(' + _SLUG + b"@(" + _SLUG + rb'))"')
_USER_ID = re.compile(
    rb'"id"\s*:\s*"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"'
)


def _psycopg_sql(statement: TextClause) -> str:
    """The statement with psycopg's placeholders: the lookups go to psycopg itself."""
    return str(statement.compile(dialect=PGDialect_psycopg()))  # type: ignore[no-untyped-call]


# The users whose rows (and agents) the run's writer may write: every one for an admin, else its
# integrator's. The complement of what the chunk apply fails as `owned_by_another_integrator`
# (identity/backfill/sql.py), which it checks before anything else.
_WRITERS = "(:admin OR u.owner IS NOT DISTINCT FROM CAST(:integrator AS text))"

# Agents: the n-th entry of `names` ("slug@user_slug") with the n-th digest of `digests` (16
# bytes each); answers one character per entry, in order: 1 where the live agent holds that
# digest and is not newer than the snapshot, and its user is the writer's (or the writer is an
# admin), else 0. Owners are found once per user.
_AGENTS = text(
    f"""
    WITH owners AS MATERIALIZED (
        -- A probe of the slug index per owner, whatever the statistics say (LIMIT keeps the
        -- planner from turning it into a join over every user).
        SELECT o.id, o.slug FROM string_to_table(:user_slugs, ',') AS s (slug)
        CROSS JOIN LATERAL (
            SELECT u.id, u.slug FROM users u
            WHERE u.slug = s.slug AND {_WRITERS}
            LIMIT 1
        ) AS o
    )
    SELECT string_agg(CASE WHEN known.hit THEN '1' ELSE '0' END, '' ORDER BY k.n)
    FROM string_to_table(:names, ',') WITH ORDINALITY AS k (name, n)
    LEFT JOIN owners o ON o.slug = split_part(k.name, '@', 2)
    -- A probe of the key's index entry per line: as a LATERAL with LIMIT, the planner cannot
    -- turn it into a join over every agent (which statistics stale after a first load invite).
    LEFT JOIN LATERAL (
        SELECT true AS hit FROM agents a
        WHERE a.user_id = o.id AND a.slug = split_part(k.name, '@', 1) AND a.deleted_at IS NULL
          AND a.line_digest = substring(CAST(:digests AS bytea) FROM 16 * k.n::int - 15 FOR 16)
          AND a.version <= :version
        LIMIT 1
    ) AS known ON true
    """
)
_AGENTS_SQL = _psycopg_sql(_AGENTS)
# Users: for the n-th id of `ids` with the n-th digest, one character in the first answer, 1
# where the row holds that digest, is not newer than the snapshot and is the writer's (or the
# writer is an admin), and the slug the row has now in the second (empty if there is no row), in
# order.
_USERS = text(
    f"""
    SELECT string_agg(CASE WHEN u.line_digest = k.digest THEN '1' ELSE '0' END, ''
                      ORDER BY k.n),
           string_agg(coalesce(u.slug, ''), ',' ORDER BY k.n)
    FROM (
        SELECT n, CAST(e AS uuid) AS id,
               substring(CAST(:digests AS bytea) FROM 16 * n::int - 15 FOR 16) AS digest
        FROM string_to_table(:ids, ',') WITH ORDINALITY AS t (e, n)
    ) AS k
    LEFT JOIN LATERAL (
        SELECT u.slug,
               CASE WHEN u.version <= :version AND {_WRITERS} THEN u.line_digest END
                   AS line_digest
        FROM users u WHERE u.id = k.id LIMIT 1
    ) AS u ON true
    """
)

_USERS_SQL = _psycopg_sql(_USERS)


# A line that names its key plainly enough to be looked up: (name, user_slug, digest, slot).
# `name` is its key after the kind ("slug@user_slug", or a user's id), `user_slug` an agent's
# owner (None for a user), `digest` the line's, and `slot` its place among its part's agents or
# users, where the lookup's answer has its flag. A plain tuple of the line's bytes: every line of
# a re-sent upload makes one, and an object of a class holding decoded strings cost about 0.4 us
# more a line, where finding and digesting the key cost about 0.8.
Candidate = tuple[bytes, bytes | None, bytes, int]


class KnownLines:
    """The lookups and the order checks of one run's receiver."""

    def __init__(
        self, snapshot_version: int, *, writer: Actor, allow_private_webhooks: bool
    ) -> None:
        self.version = snapshot_version
        self.writer = writer  # whose lines may be known: the run's
        self.seen = Bloom(SEEN_CAPACITY, 0.01)
        self.moving = Bloom(MOVING_CAPACITY, 0.01)
        self.agents_off = False
        self._seed = SEEDS[allow_private_webhooks]
        self._backoff = 0
        self._skip = 0

    def candidate(self, raw: bytes) -> Candidate | None:
        """The line's key and digest, if it names its key plainly (once, in canonical form)."""
        return self._candidates([raw], users_only=False).found[0]

    def ask(self, lines: list[bytes]) -> "Lookup":
        """The candidates among `lines` and what to ask about them (an `Asker` asks)."""
        users_only = self._skip > 0  # agents are backing off; users are looked up even so
        if users_only:
            self._skip -= 1
        return self._candidates(lines, users_only=users_only)

    def settle(self, lookup: "Lookup") -> None:
        """Back off, or not, from an answered lookup's agents; in the order of the parts."""
        if lookup.agents:
            found = "1" in lookup.agents_known
            self._backoff = 0 if found else min(max(2 * self._backoff, 1), MAX_BACKOFF)
            self._skip = self._backoff

    def _candidates(self, lines: list[bytes], *, users_only: bool) -> "Lookup":
        """Run for every line of an upload that reads known lines: a few calls per line. A
        candidate's slot is its place in the lookup's list of its kind."""
        agents_on = not users_only and not self.agents_off
        find_agent, find_user = _AGENT_KEY.search, _USER_ID.search
        digest, seed = xxhash.xxh3_128_digest, self._seed
        found: list[Candidate | None] = []
        agents: list[Candidate] = []
        users: list[Candidate] = []
        for raw in lines:
            candidate = None
            if users_only and b'"user"' not in raw:
                pass
            elif (match := find_agent(raw)) is not None:
                if agents_on and raw.count(b'"key"') == 1:
                    name, user_slug = match.group(1, 2)
                    # As digests.line_digest has it.
                    candidate = (name, user_slug, digest(raw + b"\n" + name, seed), len(agents))
                    agents.append(candidate)
            elif raw.count(b'"id"') == 1 and (match := find_user(raw)) is not None:
                name = match.group(1)
                candidate = (name, None, digest(raw + b"\n" + name, seed), len(users))
                users.append(candidate)
            found.append(candidate)
        return Lookup(found, agents, users, "0" * len(agents), "0" * len(users))

    def take_run(self, lookup: "Lookup", start: int, counts: Counter[str]) -> int:
        """Take a part's lines from `start` on as unchanged, in input order, counting them by
        kind in `counts`, up to the first one refused: its index (`len(lookup.found)` if none).
        Call `read` for that line if validation accepts it, then go on after it. One loop, not
        a call per line: every line of a re-run passes here."""
        found, agents_known, users_known = lookup.found, lookup.agents_known, lookup.users_known
        seen, moving, agents_off = self.seen, self.moving, self.agents_off
        index, end, users = start, len(found), 0
        while index < end:
            candidate = found[index]
            if candidate is None:
                break
            name, user_slug, _, slot = candidate
            if user_slug is None:
                if users_known[slot] != "1" or name in seen:
                    break
                users += 1
            elif agents_off or agents_known[slot] != "1" or user_slug in moving or name in seen:
                break
            seen.add(name)
            index += 1
        if users:  # a count of zero would make `counts` look like something to store
            counts["user"] += users
        if agents := index - start - users:
            counts["agent"] += agents
        return index

    def read(self, kind: str, key: str, slug: str | None, lookup: "Lookup", index: int) -> None:
        """Line `index` of the part went the long way as `key`: later lines of that key must
        too, and a user's slugs, the new and the stored one, may now belong to someone else."""
        name = name_of(key)
        self.seen.add(name)
        if kind != "user":
            return
        if slug is not None:
            self.moving.add(slug.encode())
        candidate = lookup.found[index]
        if candidate is None or candidate[1] is not None or candidate[0] != name:
            self.agents_off = True  # read without asking for its stored slug
        elif stored := lookup.stored_slugs[candidate[3]]:
            self.moving.add(stored.encode())


@dataclass(slots=True)
class Lookup:
    """One part's candidates, the agents and users among them to ask about, the answers (a
    flag per agent and per user, "1" where known, "0" until answered), and their cursors while
    they are on their way."""

    found: list[Candidate | None]  # a line's candidate, or None if it names no key plainly
    agents: list[Candidate]
    users: list[Candidate]
    agents_known: str
    users_known: str
    stored_slugs: list[str] = field(default_factory=list)  # a user's slug now ("": no row)
    _agents_answer: "psycopg.Cursor[Any] | None" = None
    _users_answer: "psycopg.Cursor[Any] | None" = None


class Asker:
    """Sends parts' lookups without waiting for their answers, in psycopg's pipeline mode, on
    `LANES` connections in turn, so that Postgres looks up the next parts while the receiver
    reads the part before them.

    Each connection has one part in flight (its answer is flushed on request, which would come
    after any statement sent behind it): `receive` the parts in the order they were sent, and
    keep at most `LANES` of them unanswered."""

    def __init__(self, stack: ExitStack, transaction: Transaction, known: KnownLines) -> None:
        self._stack = stack
        self._transaction = transaction
        self._lanes: list[psycopg.Connection[Any]] = []
        self._sent = 0  # parts sent: the next one goes to lane `_sent % LANES`
        self._common = {
            "version": known.version,
            "integrator": known.writer.integrator,
            "admin": known.writer.admin,
        }

    def _lane(self) -> "psycopg.Connection[Any]":
        """The next part's connection, opened when first needed (a first load's pieces of agent
        lines, backing off, ask nothing)."""
        lane = self._sent % LANES
        if lane == len(self._lanes):
            self._lanes.append(self._connect())
        self._sent += 1
        return self._lanes[lane]

    def _connect(self) -> "psycopg.Connection[Any]":
        """A connection of its own transaction, in pipeline mode."""
        session = self._stack.enter_context(self._transaction())
        self._stack.enter_context(_as_dbapi_errors())  # as the transaction sees them
        connection = session.connection().connection.driver_connection
        assert isinstance(connection, psycopg.Connection)
        self._stack.enter_context(connection.pipeline())
        # psycopg keeps the lookups prepared (planning each costs about a sixth of its run), and
        # PostgreSQL may then run one plan made from the table sizes of that moment: made while
        # `users` or `agents` was small, or analyzed empty, it scans the table whole for every
        # line once a first load has filled it. Index probes only. Such a plan could also read
        # whole any index of `agents` partial on what the lookup asks (`deleted_at IS NULL`) but
        # for the key's own, agents_live_key: there is none (migration 0015;
        # tests/identity/backfill/test_known_plans.py).
        connection.execute("SET LOCAL enable_seqscan = off")
        return connection

    def send(self, lookup: Lookup) -> None:
        """Start the part's statements (agents, users) on their way."""
        if not lookup.agents and not lookup.users:
            return
        connection = self._lane()
        with _as_dbapi_errors():
            if lookup.agents:
                lookup._agents_answer = connection.execute(
                    _AGENTS_SQL,
                    {
                        "names": b",".join([c[0] for c in lookup.agents]).decode(),
                        "digests": b"".join([c[2] for c in lookup.agents]),
                        "user_slugs": b",".join({c[1] or b"" for c in lookup.agents}).decode(),
                        **self._common,
                    },
                )
            if lookup.users:
                lookup._users_answer = connection.execute(
                    _USERS_SQL,
                    {
                        "ids": b",".join([c[0] for c in lookup.users]).decode(),
                        "digests": b"".join([c[2] for c in lookup.users]),
                        **self._common,
                    },
                )

    def receive(self, lookup: Lookup) -> None:
        """Wait for the part's answers: which candidates are known, and users' stored slugs."""
        with _as_dbapi_errors():
            if (answer := lookup._agents_answer) is not None:
                flags = _one(answer)[0]
                _one_each(flags, lookup.agents)
                lookup.agents_known = flags
            if (answer := lookup._users_answer) is not None:
                flags, slugs = _one(answer)
                stored = slugs.split(",")
                _one_each(flags, lookup.users)
                _one_each(stored, lookup.users)
                lookup.users_known, lookup.stored_slugs = flags, stored
        lookup._agents_answer = lookup._users_answer = None


def _one_each(answer: Sized, asked: list[Candidate]) -> None:
    """An answer has one entry per candidate asked about, or none of it is trusted."""
    if len(answer) != len(asked):
        raise ValueError(f"{len(answer)} answers for {len(asked)} lines")


@contextmanager
def asking(transaction: Transaction, known: KnownLines) -> Iterator[Asker]:
    """An `Asker` for `known`'s lookups whose transactions (one per connection it opened) end
    with the block."""
    with _as_dbapi_errors(), ExitStack() as stack:
        yield Asker(stack, transaction, known)


def _one(cursor: "psycopg.Cursor[Any]") -> tuple[Any, ...]:
    row = cursor.fetchone()
    assert row is not None  # an aggregate answers one row
    return tuple(row)


@contextmanager
def _as_dbapi_errors() -> Iterator[None]:
    """psycopg's errors as SQLAlchemy's, as every other statement raises them (the API answers
    an unreachable database with its 503)."""
    try:
        yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(None, None, exc, psycopg.Error) from exc
