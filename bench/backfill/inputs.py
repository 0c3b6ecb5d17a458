"""The backfill benchmark's input: the NDJSON file the service reads, and the same rows as COPY
text for the raw database floor."""

import json
import uuid
from pathlib import Path
from typing import Any

from identity.agents import new_agent_ids


def _user_id(i: int) -> str:
    return str(uuid.UUID(int=(0xB0F1 << 112) + i))


def write_input(path: Path, users: int, agents: int) -> int:
    """The NDJSON file: every user, then its agents spread evenly over the users."""
    per_user, extra = divmod(agents, users)
    with path.open("w") as out:
        for i in range(users):
            out.write(
                json.dumps(
                    {
                        "type": "user",
                        "id": _user_id(i),
                        "email": f"user{i}@example.com",
                        "slug": f"user-{i}",
                        "plan": ("free", "pro", "team")[i % 3],
                        "metadata": {"region": f"r{i % 5}"},
                    }
                )
                + "\n"
            )
        for i in range(users):
            for j in range(per_user + (1 if i < extra else 0)):
                out.write(
                    json.dumps(
                        {
                            "type": "agent",
                            "key": f"agent-{j}@user-{i}",
                            "display_name": f"Agent {j} of user {i}",
                            "webhook_url": f"https://hooks.example.com/u{i}/a{j}",
                            "metadata": {"team": f"t{i % 7}", "n": j},
                        }
                    )
                    + "\n"
                )
    return path.stat().st_size


def _tsv(value: Any) -> str:
    if value is None:
        return "\\N"
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def write_floor_input(ndjson: Path, users: Path, agents: Path) -> None:
    """The same rows as COPY text, prepared before the floor's clock starts. Agent ids are drawn
    as the service draws them (random, so their primary-key inserts land all over the index)."""
    ids: list[str] = []
    with ndjson.open() as source, users.open("w") as u, agents.open("w") as a:
        for line in source:
            item = json.loads(line)
            if item["type"] == "user":
                fields = [
                    item["id"],
                    item["email"],
                    item["slug"],
                    item.get("plan", "free"),
                    item.get("metadata", {}),
                    None,
                ]
                u.write("\t".join(_tsv(f) for f in fields) + "\n")
            else:
                slug, user_slug = item["key"].split("@")
                if not ids:
                    ids = new_agent_ids(10_000)
                fields = [
                    ids.pop(),
                    user_slug,
                    slug,
                    item["display_name"],
                    item.get("webhook_url"),
                    item.get("metadata", {}),
                ]
                a.write("\t".join(_tsv(f) for f in fields) + "\n")
