"""Talking to a running API from the command line: its address and token, and answers that
are errors printed as such."""

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

from identity.settings import get_settings

if TYPE_CHECKING:
    import httpx

console = Console()
_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def api_token(token: str | None) -> str:
    """The token given, else IDMIRROR_INTERNAL_TOKEN, else the one `idmirror up` saved."""
    if token:
        return token
    settings = get_settings()
    if settings.internal_token:
        return settings.internal_token
    saved = settings.home / "token"
    if saved.exists():
        return saved.read_text().strip()
    raise typer.BadParameter("no token: pass --token or set IDMIRROR_TOKEN", param_hint="--token")


def base_url(url: str | None) -> str:
    settings = get_settings()
    return url or f"http://{settings.host}:{settings.port}"


def client(url: str | None, token: str | None, **kwargs: Any) -> "httpx.Client":
    import httpx

    headers = {"Authorization": f"Bearer {api_token(token)}"}
    return httpx.Client(base_url=base_url(url), headers=headers, **kwargs)


def answer(response: "httpx.Response", expected: int = 200) -> Any:
    """The JSON of an expected answer; otherwise the error is printed and the command fails."""
    if response.status_code == expected:
        return response.json() if response.content else None
    try:
        error = response.json().get("error", {})
    except ValueError:
        error = {"code": "http_error", "message": response.text[:200]}
    console.print(f"[red]{response.status_code} {error.get('code')}: {error.get('message')}[/]")
    raise typer.Exit(1)


def duration(text: str) -> timedelta:
    """`90d`, `12h`, `30m`, `45s` or `2w`."""
    match = _DURATION.match(text.strip())
    if match is None:
        raise typer.BadParameter("a number and one of s, m, h, d, w: 90d, 12h", param_hint=text)
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
