"""`idmirror backfill FILE`: upload an NDJSON file through the Python client and follow the run.

Its options are checked before anything is sent; an error answer is printed with its code,
message and details, and an unreachable API by its URL.
"""

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

if TYPE_CHECKING:
    from idmirror_client import Backfill

console = Console(highlight=False)


def check_options(mode: str, prune: bool, snapshot_at: str | None) -> None:
    """Refuse options the API would refuse, before the upload starts."""
    if mode not in ("upsert", "mirror"):
        raise typer.BadParameter("upsert or mirror", param_hint="--mode")
    if prune and mode != "mirror":
        raise typer.BadParameter("--prune needs --mode mirror", param_hint="--prune")
    if snapshot_at is not None:
        try:
            moment = datetime.fromisoformat(snapshot_at)
        except ValueError:
            raise typer.BadParameter("an RFC 3339 time", param_hint="--snapshot-at") from None
        if moment.tzinfo is None:
            raise typer.BadParameter("needs an offset, such as Z", param_hint="--snapshot-at")


class Bars:
    """Two bars: bytes uploaded, then items applied."""

    def __init__(self, size: int) -> None:
        self.upload = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=console,
        )
        self.apply = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            "{task.fields[rate]} items/s",
            "ETA",
            TimeRemainingColumn(),
            console=console,
        )
        self._sent = self.upload.add_task("uploading", total=size)
        self._applied: Any = None

    def uploaded(self, n: int) -> None:
        if not self.upload.live.is_started:
            self.upload.start()
        self.upload.advance(self._sent, n)

    def progress(self, run: "Backfill") -> None:
        if self.upload.live.is_started:
            self.upload.stop()
        if self._applied is None:
            console.print(f"backfill {run.id} received {run.counts.received:,} items")
            self.apply.start()
            self._applied = self.apply.add_task("applying", total=None, rate="-")
        counts = run.counts
        done = counts.created + counts.updated + counts.unchanged + counts.superseded
        self.apply.update(
            self._applied,
            completed=done + counts.failed,
            total=counts.received or None,
            rate=f"{run.items_per_second:,.0f}",
            description=run.phase if run.status == "running" else run.status,
        )
        if run.finished:
            self.apply.stop()


def report(run: "Backfill", base: str) -> None:
    counts = run.counts.model_dump()
    console.print(
        f"[bold]{run.status}[/] in {run.phase}: "
        + ", ".join(f"{k} {v:,}" for k, v in counts.items())
        + f" ({run.items_per_second:,.0f} items/s)"
    )
    if run.drift:
        console.print(f"drift: {run.drift}")
    if run.error:
        console.print(f"[red]{run.error.get('code')}: {run.error.get('message')}[/]")
    if run.counts.failed:
        where = f"{base}/v1/internal/backfills/{run.id}/failures"
        console.print(f"{run.counts.failed:,} failed items: GET {where}")


def run_backfill(
    file: Path,
    base: str,
    token: str,
    *,
    mode: str,
    prune: bool,
    dry_run: bool,
    snapshot_at: str | None,
    poll: float,
) -> None:
    """Upload `file`, follow the run to its end, print its counts; exit 1 unless completed."""
    from idmirror_client import Client, IdmirrorError

    check_options(mode, prune, snapshot_at)
    bars = Bars(file.stat().st_size)
    try:
        with Client(base, token) as client:
            run = client.backfill(
                file,
                mode=mode,
                prune=prune,
                dry_run=dry_run,
                snapshot_at=snapshot_at,
                progress=bars.progress,
                uploaded=bars.uploaded,
                poll=poll,
            )
    except IdmirrorError as exc:
        bars.upload.stop()
        bars.apply.stop()
        console.print(f"[red]{exc}[/]")
        if exc.details:
            console.print(f"details: {exc.details}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        console.print(f"stopped watching; the backfill goes on: {base}/v1/internal/backfills")
        raise typer.Exit(130) from None
    report(run, base)
    if run.status != "completed":
        raise typer.Exit(1)
