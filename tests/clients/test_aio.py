"""`AsyncClient` against the live stack: the same calls, awaited."""

import asyncio
import uuid
from pathlib import Path

from idmirror_client import AgentUpsert, AgentWrite, AsyncClient, Job, NotFound, UserUpsert

from tests.conftest import new_slug
from tests.stack import TOKEN, Stack


def test_the_async_client_writes_waits_reads_and_backfills(stack: Stack, tmp_path: Path) -> None:
    slug = new_slug("aio")
    lines = tmp_path / "items.ndjson"
    lines.write_text(
        "".join(
            f'{{"type": "agent", "key": "b{i}@{slug}", "display_name": "B"}}\n' for i in range(50)
        )
    )

    async def run() -> None:
        async with AsyncClient(stack.base_url, TOKEN) as api:
            await api.upsert_user(uuid.uuid4(), UserUpsert(email="a@example.com", slug=slug))
            jobs = await asyncio.gather(
                *(
                    api.upsert_agent(
                        f"a{i}@{slug}", AgentUpsert(display_name="A"), respond_async=True
                    )
                    for i in range(20)
                )
            )
            assert all(isinstance(job, Job) for job in jobs)
            done = [await api.wait_for_job(job.id) for job in jobs if isinstance(job, Job)]
            assert {job.status for job in done} == {"applied"}
            written = await api.upsert_agent(f"a0@{slug}", AgentUpsert(display_name="A2"))
            assert isinstance(written, AgentWrite) and written.outcome == "updated"
            run = await api.backfill(lines, poll=0.1)
            assert (run.status, run.counts.created) == ("completed", 50)
            try:
                await api.get_agent(f"missing@{slug}")
            except NotFound as exc:
                assert exc.code == "agent_not_found"
            else:
                raise AssertionError("a missing agent must raise NotFound")

    asyncio.run(run())
