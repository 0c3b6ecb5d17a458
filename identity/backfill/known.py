"""Recognising backfill lines that an earlier backfill applied, without reading them again.

A user or agent row keeps the digest of the backfill line that last wrote it (`line_digest`: the
chunk apply sets it, every other write clears it through the shared ON CONFLICT clause). So a
line whose row still holds its digest, and is not newer than the run's snapshot, would be
classified `unchanged` by the chunk apply: same fields, nothing newer. The receiver asks
Postgres about a whole piece of input at once, counts those lines as unchanged, and validates,
stores and applies only the others.

What keeps the verdict the one the chunk apply would give:
- the digest covers the line's bytes and the setting its validity depends on (private
  webhooks), under a rules version to bump when validation changes;
- a line takes this path only if its key has not come earlier in the input (a Bloom filter of
  the keys seen: a false positive merely sends a line the long way);
- an agent is found through its owner's slug, so an agent line whose user slug an earlier user
  line of the input may give or take (the line's slug and the user's stored one) goes the long
  way too; a user line read without a lookup turns the agent path off for the rest of the run.

The one case where the verdict can differ: a user line that comes after agent lines does not
reach back. Agent lines counted before it were matched by the slugs of that moment, as agent
chunks applied early are, where lines still buffered would be matched after every user
(docs/backfills.md).

Mirror runs and dry runs read every line (they need the input's items themselves). When a piece
of agent lines finds none known (a first load), lookups back off, skipping up to 32 pieces, and
return after the first piece that finds some.
"""

import hashlib
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from rbloom import Bloom
from sqlalchemy import text
from sqlalchemy.orm import Session

from identity.keys import SLUG_RE

RULES = b"1"  # bump when validation changes what a line means
SEEN_CAPACITY = 2_000_000  # keys; past it the filter's false positives grow (2.4 MB)
MOVING_CAPACITY = 500_000  # user slugs (0.6 MB)
MAX_BACKOFF = 32

_SLUG = SLUG_RE.pattern.removeprefix("^").removesuffix("$").encode()
_AGENT_KEY = re.compile(rb'"key"\s*:\s*"(' + _SLUG + b"@(" + _SLUG + rb'))"')
_USER_ID = re.compile(
    rb'"id"\s*:\s*"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"'
)

# Agents: one entry per line, "slug@user_slug:digest"; answers the positions (from 1) of the
# entries whose live agent holds that digest and is not newer than the snapshot. Owners are
# found once per user.
_AGENTS = text(
    """
    WITH k AS MATERIALIZED (
        SELECT n, split_part(e, '@', 1) AS slug,
               split_part(split_part(e, ':', 1), '@', 2) AS user_slug,
               decode(split_part(e, ':', 2), 'hex') AS digest
        FROM string_to_table(:entries, ',') WITH ORDINALITY AS t (e, n)
    ),
    owners AS MATERIALIZED (
        -- A probe of the slug index per owner, whatever the statistics say (LIMIT keeps the
        -- planner from turning it into a join over every user).
        SELECT o.id, o.slug FROM string_to_table(:user_slugs, ',') AS s (slug)
        CROSS JOIN LATERAL (SELECT u.id, u.slug FROM users u WHERE u.slug = s.slug LIMIT 1) AS o
    )
    SELECT string_agg(k.n::text, ',') FROM k JOIN owners o ON o.slug = k.user_slug
    -- A probe of the key's index entry per line: as a LATERAL with LIMIT, the planner cannot
    -- turn it into a join over every agent (which statistics stale after a first load invite).
    CROSS JOIN LATERAL (
        SELECT FROM agents a
        WHERE a.user_id = o.id AND a.slug = k.slug AND a.deleted_at IS NULL
          AND a.line_digest = k.digest AND a.version <= :version
        LIMIT 1
    ) AS known
    """
)
# Users: the stored slug of each, and the digest it holds if it is not newer than the snapshot.
_USERS = text(
    """
    SELECT id::text, slug,
           CASE WHEN version <= :version THEN encode(line_digest, 'hex') END AS digest
    FROM users WHERE id = ANY(CAST(:ids AS uuid[]))
    """
)


_HASHERS = {
    allow: hashlib.blake2b(
        digest_size=16, person=b"lines-" + RULES + (b"-private" if allow else b"")
    )
    for allow in (False, True)
}


def line_digest(raw: bytes, *, allow_private_webhooks: bool) -> str:
    """What a row remembers of the line that wrote it, in hex."""
    hasher = _HASHERS[allow_private_webhooks].copy()  # cheaper than a new one with its person
    hasher.update(raw)
    return hasher.hexdigest()


@dataclass(slots=True)
class Candidate:
    """A line that names its key plainly enough to be looked up."""

    kind: str  # "user" | "agent"
    name: str  # agents: slug@user_slug; users: the id
    user_slug: str | None  # agents: the owner's slug
    digest: str  # the line's digest, in hex
    known: bool = False  # the row holds this line's digest and is not newer than the snapshot
    stored_slug: str | None = None  # users: the slug the row has now

    @property
    def key(self) -> str:
        """The ledger key."""
        return f"{self.kind}:{self.name}"


class KnownLines:
    """The lookups and the order checks of one run's receiver."""

    def __init__(self, snapshot_version: int, *, allow_private_webhooks: bool) -> None:
        self.version = snapshot_version
        self.allow_private = allow_private_webhooks
        self.seen = Bloom(SEEN_CAPACITY, 0.01)
        self.moving = Bloom(MOVING_CAPACITY, 0.01)
        self.agents_off = False
        self._backoff = 0
        self._skip = 0

    def candidate(self, raw: bytes, *, agents: bool = True) -> Candidate | None:
        """The line's key and digest, if it names its key plainly (once, in canonical form)."""
        match = _AGENT_KEY.search(raw)
        if match is not None:
            if not agents or self.agents_off or raw.count(b'"key"') != 1:
                return None
            name, user_slug = match.group(1).decode(), match.group(2).decode()
            return Candidate("agent", name, user_slug, self._digest(raw))
        if raw.count(b'"id"') != 1 or (match := _USER_ID.search(raw)) is None:
            return None
        user_id = match.group(1).decode()
        return Candidate("user", user_id, None, self._digest(raw))

    def _digest(self, raw: bytes) -> str:
        return line_digest(raw, allow_private_webhooks=self.allow_private)

    def look_up(
        self, transaction: Callable[[], AbstractContextManager[Session]], lines: list[bytes]
    ) -> list[Candidate | None]:
        """The candidates among `lines`, marked `known` where their row holds their digest."""
        skipping = self._skip > 0
        if skipping:  # agents are backing off; users are looked up even so (their slugs matter)
            self._skip -= 1
            found = [
                self.candidate(raw, agents=False) if b'"user"' in raw else None for raw in lines
            ]
        else:
            found = [self.candidate(raw) for raw in lines]
        agents = [c for c in found if c is not None and c.kind == "agent"]
        users = [c for c in found if c is not None and c.kind == "user"]
        if not agents and not users:
            return found
        with transaction() as session:
            if agents:
                entries = ",".join(f"{c.name}:{c.digest}" for c in agents)
                known = session.execute(
                    _AGENTS,
                    {
                        "entries": entries,
                        "user_slugs": ",".join({c.user_slug or "" for c in agents}),
                        "version": self.version,
                    },
                ).scalar()
                for position in known.split(",") if known else ():
                    agents[int(position) - 1].known = True
                self._back_off(found_some=bool(known))
            if users:
                ids = list({c.name for c in users})
                rows = session.execute(_USERS, {"ids": ids, "version": self.version})
                stored = {user_id: (slug, digest) for user_id, slug, digest in rows}
                for c in users:
                    c.stored_slug, digest = stored.get(c.name, (None, None))
                    c.known = digest == c.digest
        return found

    def _back_off(self, *, found_some: bool) -> None:
        self._backoff = 0 if found_some else min(max(2 * self._backoff, 1), MAX_BACKOFF)
        self._skip = self._backoff

    def take(self, candidate: Candidate | None) -> bool:
        """Whether the line is unchanged, in input order: call once per line, and `read` for
        every line this refuses that validation accepts."""
        if candidate is None or not candidate.known or candidate.key in self.seen:
            return False
        if candidate.kind == "agent" and (self.agents_off or candidate.user_slug in self.moving):
            return False
        self.seen.add(candidate.key)
        return True

    def read(self, kind: str, key: str, slug: str | None, candidate: Candidate | None) -> None:
        """A line went the long way as `key`: later lines of that key must too, and a user's
        slugs, the new and the stored one, may now belong to someone else."""
        self.seen.add(key)
        if kind != "user":
            return
        if slug is not None:
            self.moving.add(slug)
        if candidate is None or candidate.key != key:
            self.agents_off = True  # read without asking for its stored slug
        elif candidate.stored_slug is not None:
            self.moving.add(candidate.stored_slug)
