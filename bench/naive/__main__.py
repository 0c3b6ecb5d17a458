"""`python -m bench.naive --workers N --port P`: the naive app under uvicorn, with the options
and IDMIRROR_* settings `idmirror api` serves the API with, but its own port."""

import argparse

import uvicorn

from bench.naive.tables import create_tables
from identity.logs import logging_config
from identity.settings import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.naive", description=__doc__)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = get_settings()
    create_tables(settings.require_database_url())  # once, before the workers start
    uvicorn.run(
        "bench.naive.app:create_app",
        factory=True,
        host=settings.host,
        port=args.port,
        workers=args.workers,
        log_config=logging_config(settings.log_level, settings.log_format),
        log_level=settings.log_level.lower(),
        access_log=False,
    )


if __name__ == "__main__":
    main()
