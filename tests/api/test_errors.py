"""An unexpected error is answered with the envelope, and the client's connection stays usable."""

import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI

from api.errors import install
from api.limits import Edge, Limits
from cli.embedded import free_port


def test_unexpected_errors_answer_500_and_keep_the_connection() -> None:
    app = FastAPI()
    app.add_middleware(Edge, limits=Limits(1024, 1024, 10.0))  # the catch-all
    install(app)

    @app.get("/fails")
    async def fails() -> None:
        raise RuntimeError("a bug")

    @app.get("/works")
    async def works() -> dict[str, bool]:
        return {"ok": True}

    port = free_port()
    # At "error" uvicorn logs the traceback it is handed, as in production: the time that takes
    # is when a client's next request meets the connection uvicorn then closes.
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            # One after the other on a keep-alive connection, which must outlive each failure.
            answers = [client.get("/fails") for _ in range(20)]
            after = client.get("/works")
        assert {a.status_code for a in answers} == {500}
        assert {a.json()["error"]["code"] for a in answers} == {"internal_error"}
        assert after.json() == {"ok": True}
    finally:
        server.should_exit = True
        thread.join(10)
