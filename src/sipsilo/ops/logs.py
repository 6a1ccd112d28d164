"""Log output on stderr: `[server] log_format = "text"` for people, `"json"` for Loki/ELK.

With json every line is one JSON object: ``time`` (RFC 3339, UTC, milliseconds),
``level``, ``logger``, ``event`` (the formatted message), ``worker`` in a worker
process, and ``call_id`` / ``user`` / ``message_id`` when the code that logs
passes them (``log.info(..., extra={"call_id": ...})``); an exception's
traceback goes in ``exc`` as one string, so a line never breaks in two.

Level and format can change while the server runs (SIGHUP): :func:`setup_logging`
replaces the one handler it installed on the root logger.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Attributes of a LogRecord a caller may set through ``extra=``, copied into JSON lines.
CONTEXT_FIELDS = ("call_id", "user", "message_id")

_HANDLER_MARK = "_sipsilo_handler"


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: str = "") -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", seconds)
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        if self._worker:
            doc["worker"] = self._worker
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                doc[name] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False, default=str)


def text_formatter(worker: str = "") -> logging.Formatter:
    name = f" {worker}" if worker else ""
    return logging.Formatter(f"%(asctime)s %(levelname)s{name} %(name)s: %(message)s")


def setup_logging(level: str, log_format: str, worker: str = "") -> None:
    """Install (or replace) sipsilo's stderr handler on the root logger."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    setattr(handler, _HANDLER_MARK, True)
    handler.setFormatter(JsonFormatter(worker) if log_format == "json"
                         else text_formatter(worker))
    root.addHandler(handler)
    root.setLevel(level.upper())
