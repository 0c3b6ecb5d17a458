"""`idmirror tokens ...`, `idmirror integrators ...` and `idmirror audit`: the admin API from the
command line, with an admin token (IDMIRROR_INTERNAL_TOKEN or one with the `admin` scope)."""

from datetime import UTC, datetime
from typing import Any

import typer
from rich.table import Table

from cli.remote import answer, client, console, duration

URL = typer.Option(None, envvar="IDMIRROR_URL", help="API base URL")
TOKEN = typer.Option(None, envvar="IDMIRROR_TOKEN", help="an admin bearer token")
tokens = typer.Typer(help="Integrators' bearer tokens.", no_args_is_help=True)
integrators = typer.Typer(help="Integrators: names, rate limits, disabling.", no_args_is_help=True)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console.print(table)


@tokens.command("create")
def create_token(
    integrator: str = typer.Option(..., help="the integrator the token acts for"),
    scope: list[str] = typer.Option(..., help="a scope; repeat for several"),
    name: str | None = typer.Option(None, help="what the token is for"),
    expires_in: str | None = typer.Option(None, help="lifetime: 90d, 12h, 30m"),
    url: str | None = URL,
    token: str | None = TOKEN,
) -> None:
    """Create a token and print it, alone on the last line: it is shown only this once."""
    body: dict[str, Any] = {"integrator": integrator, "scopes": scope, "name": name}
    if expires_in is not None:
        body["expires_at"] = (datetime.now(UTC) + duration(expires_in)).isoformat()
    with client(url, token, timeout=30) as c:
        created = answer(c.post("/v1/admin/tokens", json=body), 201)
    console.print(f"token {created['id']} for {integrator}: {', '.join(created['scopes'])}")
    if created["expires_at"]:
        console.print(f"expires at {created['expires_at']}")
    print(created["token"])


@tokens.command("list")
def list_tokens(
    integrator: str | None = typer.Option(None, help="only this integrator's"),
    url: str | None = URL,
    token: str | None = TOKEN,
) -> None:
    """Tokens, newest first (never their secrets)."""
    params = {"integrator": integrator} if integrator else {}
    with client(url, token, timeout=30) as c:
        items = _every(c, "/v1/admin/tokens", params)
    for item in items:
        item["scopes"] = ",".join(item["scopes"])
    columns = ["id", "integrator", "name", "scopes", "created_at", "expires_at"]
    _table(items, columns + ["last_used_at", "revoked_at"])


@tokens.command("revoke")
def revoke_token(token_id: str, url: str | None = URL, token: str | None = TOKEN) -> None:
    """Revoke a token: every API process refuses it within a second."""
    with client(url, token, timeout=30) as c:
        answer(c.delete(f"/v1/admin/tokens/{token_id}"), 204)
    console.print(f"token {token_id} revoked")


def _rate(per_second: float | None, burst: int | None) -> dict[str, Any] | None:
    if per_second is None and burst is None:
        return None
    if per_second is None or burst is None:
        raise typer.BadParameter("give --per-second and --burst together")
    return {"per_second": per_second, "burst": burst}


@integrators.command("create")
def create_integrator(
    name: str,
    display_name: str = typer.Option(..., help="a name for people"),
    per_second: float | None = typer.Option(None, help="rate limit: requests a second"),
    burst: int | None = typer.Option(None, help="rate limit: requests at once"),
    url: str | None = URL,
    token: str | None = TOKEN,
) -> None:
    """Create an integrator (its rate limit defaults to the settings')."""
    body = {"name": name, "display_name": display_name, "rate_limit": _rate(per_second, burst)}
    with client(url, token, timeout=30) as c:
        _table([_flat(answer(c.post("/v1/admin/integrators", json=body), 201))], _COLUMNS)


@integrators.command("list")
def list_integrators(url: str | None = URL, token: str | None = TOKEN) -> None:
    """Integrators, by name."""
    with client(url, token, timeout=30) as c:
        _table([_flat(i) for i in _every(c, "/v1/admin/integrators", {})], _COLUMNS)


@integrators.command("update")
def update_integrator(
    name: str,
    display_name: str | None = typer.Option(None),
    disabled: bool | None = typer.Option(None, "--disable/--enable", help="refuse its tokens"),
    per_second: float | None = typer.Option(None),
    burst: int | None = typer.Option(None),
    url: str | None = URL,
    token: str | None = TOKEN,
) -> None:
    """Change an integrator; --disable refuses all its tokens at once."""
    body: dict[str, Any] = {}
    if display_name is not None:
        body["display_name"] = display_name
    if disabled is not None:
        body["disabled"] = disabled
    if (rate := _rate(per_second, burst)) is not None:
        body["rate_limit"] = rate
    with client(url, token, timeout=30) as c:
        updated = answer(c.patch(f"/v1/admin/integrators/{name}", json=body))
    _table([_flat(updated)], _COLUMNS)


_COLUMNS = ["name", "display_name", "disabled", "per_second", "burst", "created_at"]


def _flat(integrator: dict[str, Any]) -> dict[str, Any]:
    return {**integrator, **integrator["rate_limit"]}


def _every(c: Any, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        more: dict[str, str] = {"cursor": cursor} if cursor is not None else {}
        page = answer(c.get(path, params={**params, "limit": 500, **more}))
        items += page["items"]
        if (cursor := page["next_cursor"]) is None:
            return items


def audit(
    integrator: str | None = typer.Option(None),
    key: str | None = typer.Option(None, help="a ledger key: user:<uuid>, agent:<slug>@<user>"),
    token_id: str | None = typer.Option(None),
    since: str | None = typer.Option(None, help="RFC 3339, or a duration back from now: 1h"),
    limit: int = typer.Option(50, min=1, max=500),
    url: str | None = URL,
    token: str | None = TOKEN,
) -> None:
    """The audit trail, newest first."""
    if since is not None and since[-1:] in "smhdw" and since[:-1].isdigit():
        since = (datetime.now(UTC) - duration(since)).isoformat()
    given = {"integrator": integrator, "key": key, "token_id": token_id, "since": since}
    params = {name: value for name, value in given.items() if value is not None}
    with client(url, token, timeout=30) as c:
        page = answer(c.get("/v1/audit", params={**params, "limit": limit}))
    columns = ["at", "integrator", "action", "key", "outcome", "job_id", "token_id", "client"]
    _table(page["items"], columns)
