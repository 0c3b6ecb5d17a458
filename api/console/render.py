"""Rendering console pages: the Jinja2 templates shipped beside this module, their filters, and
the route class that answers a console page's errors with an HTML page (a missing login with
the login form) instead of the API's JSON envelope."""

import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from api.console.auth import Forbidden, Login, LoginRequired
from identity.errors import IdmirrorError

HERE = Path(__file__).parent
ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(("html",)),
    undefined=jinja2.StrictUndefined,
)


def _ago(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return seconds((datetime.now(UTC) - moment).total_seconds()) + " ago"


def seconds(value: float | None) -> str:
    """A duration as people read it: 850 ms, 12.5 s, 4 min 10 s, 3 h 5 min."""
    if value is None:
        return "never"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def _query(**params: Any) -> str:
    """A query string of the parameters that are set."""
    return urlencode({k: v for k, v in params.items() if v not in (None, "")})


ENV.filters.update(ago=_ago, seconds=seconds, when=_when, pretty=_pretty, quote=quote)
ENV.globals.update(query=_query)


def page(
    request: Request, template: str, login: Login | None, status: int = 200, **context: Any
) -> HTMLResponse:
    """A console page."""
    body = ENV.get_template(template).render(
        request=request, login=login, notice=request.query_params.get("notice"), **context
    )
    return HTMLResponse(body, status_code=status)


def error_page(request: Request, status: int, code: str, message: str) -> HTMLResponse:
    return page(request, "error.html", None, status, code=code, message=message)


class ConsoleRoute(APIRoute):
    """Errors of console pages as pages: a missing session sends to the login form."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def console_handler(request: Request) -> Response:
            try:
                return await handle(request)
            except LoginRequired:
                target = request.url.path
                if request.method == "GET" and request.url.query:
                    target += "?" + request.url.query
                return RedirectResponse(f"/console/login?{_query(next=target)}", 303)
            except Forbidden as exc:
                return error_page(request, 403, "forbidden", exc.message)
            except IdmirrorError as exc:
                return error_page(request, exc.status, exc.code, exc.message)
            except RequestValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}"
                    for e in exc.errors()
                )
                return error_page(request, 422, "validation_error", problems)

        return console_handler
