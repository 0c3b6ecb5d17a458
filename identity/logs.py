"""Logging for every idmirror process, the same way: records go to stderr at IDMIRROR_LOG_LEVEL,
as text lines or as one JSON object a line (IDMIRROR_LOG_FORMAT=json), whatever library
logged them (uvicorn, Celery, Flower, ours).

The fields a record carries besides its message (`extra=`, as the access log's status and
duration) are keys of their own in JSON; in text they are only what the message says.
"""

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

# The process id tells apart the lines of an API's processes, or a worker's, in one stream.
TEXT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

# The attributes every record has; any other one came in `extra` (uvicorn's `color_message`
# repeats the message with terminal colours).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_STANDARD |= {"color_message"}


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC), level, logger, process id, message, its extra
    fields, and the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        entry.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def logging_config(level: str, log_format: LogFormat) -> dict[str, Any]:
    """The dictConfig of the root logger; uvicorn takes it as its log_config, so that each of
    its worker processes applies it too."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"text": {"format": TEXT}, "json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": log_format,
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level, "handlers": ["stderr"]},
    }


def configure(level: str, log_format: LogFormat) -> None:
    """Send this process's records, and its Python warnings, to stderr in the format asked for."""
    logging.config.dictConfig(logging_config(level, log_format))
    logging.captureWarnings(True)
