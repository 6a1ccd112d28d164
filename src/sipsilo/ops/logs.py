"""Log output on stderr: `[server] log_format = "text"` for people, `"json"` for Loki/ELK.

With json every line is one JSON object: ``time`` (RFC 3339, UTC, milliseconds),
``level``, ``logger``, ``event`` (the formatted message), ``worker`` in a worker
process, and ``call_id`` / ``user`` / ``message_id`` when the code that logs
passes them (``log.info(..., extra={"call_id": ...})``); an exception's
traceback goes in ``exc`` as one string, so a line never breaks in two.

Level and format can change while the server runs (SIGHUP): :func:`setup_logging`
replaces the one handler it installed on the root logger.

Logging is off the request path, because at info every stored and delivered
message is a line: the code that logs only makes the record and queues it
(``QueueHandler``); one thread formats the records and writes them, several
per write (:class:`_BatchingListener`, every ``WRITE_INTERVAL``). What a record
carries that the formats never show (the caller's file and line, thread and
process names) is not collected. :func:`flush_logging` waits until every
queued line is written: the server calls it when it stops, and at exit it
runs anyway, so no line is lost at SIGTERM or before an error message.

A warning or an error is the exception: the code that logs it waits until it is
written (and, the queue being in order, every line before it). They are rare,
they are what an operator reads after a crash, and the server's next step
(an answer, an exit) should come after them, not before.
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

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


class _TextFormatter(logging.Formatter):
    """The text format, its time stamp made once per second rather than per line."""

    _second = -1
    _stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


def text_formatter(worker: str = "") -> logging.Formatter:
    name = f" {worker}" if worker else ""
    return _TextFormatter(f"%(asctime)s %(levelname)s{name} %(name)s: %(message)s")


class _Flush:
    """Queued after the records a caller waits for; set once they are written."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Lines:
    """The queue between the code that logs and the writer.

    Putting a record wakes nobody (a ``deque`` append): at thousands of lines a
    second, waking a thread per line costs more than formatting it. The writer
    collects whatever is there every ``WRITE_INTERVAL``, or at once when asked.
    """

    def __init__(self) -> None:
        self._items: deque[Any] = deque()
        self.wake = threading.Event()

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)

    def urgent(self, item: Any) -> None:
        self._items.append(item)
        self.wake.set()

    def take(self) -> list[Any]:
        items = self._items
        batch = []
        while items:
            batch.append(items.popleft())
        return batch


#: Seconds an info line may wait to be written (the writer's sleep between batches).
WRITE_INTERVAL = 0.05


class _QueueHandler(logging.handlers.QueueHandler):
    """Queues the record as it is: formatting is the writer's work.

    (The standard one formats here, on the request path. The arguments are
    read a moment later; what is logged is values and addresses, not objects
    that change under it.) A warning or an error is waited for.
    """

    queue: _Lines  # type: ignore[assignment]

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock (an append is atomic) and no filters (we set none):
        # this is the whole cost of a line on the request path.
        self.queue.put_nowait(record)
        if record.levelno >= logging.WARNING and _listener is not None:
            _listener.join()
        return True


class _BatchedStream(logging.StreamHandler):  # type: ignore[type-arg]
    """Collects lines and writes them in one go when the writer says so."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        if not self._lines:
            return
        data, self._lines = "".join(self._lines), []
        try:
            self.stream.write(data)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: nowhere to say it
            pass


class _BatchingListener(logging.handlers.QueueListener):
    """The writer thread: formats and writes what was queued, a batch per write."""

    def __init__(self, lines: _Lines, handler: _BatchedStream) -> None:
        super().__init__(lines, handler, respect_handler_level=False)  # type: ignore[arg-type]
        self._lines = lines
        self._out = handler

    def join(self) -> None:
        """Until everything queued so far is written (at once from the writer itself,
        or once it is gone: nobody would write it)."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        marker = _Flush()
        self._lines.urgent(marker)
        while not marker.done.wait(0.5) and thread.is_alive():
            pass

    def enqueue_sentinel(self) -> None:
        self._lines.urgent(None)

    def _monitor(self) -> None:
        lines, done = self._lines, False
        while not done:
            lines.wake.wait(WRITE_INTERVAL)
            lines.wake.clear()
            waiting: list[_Flush] = []
            for record in lines.take():
                if record is None:  # stop()'s sentinel
                    done = True
                elif isinstance(record, _Flush):
                    waiting.append(record)
                else:
                    self.handle(record)
            self._out.flush()
            for marker in waiting:
                marker.done.set()


_listener: _BatchingListener | None = None


def _optimise_records() -> None:
    """Records stop collecting what no format of ours shows (each costs per line)."""
    logging._srcfile = None  # the caller's file and line: a stack walk per record
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def flush_logging() -> None:
    """Return once every line logged so far is written."""
    if _listener is not None:
        _listener.join()


def stop_logging() -> None:
    """Write what is queued, end the writer thread and remove sipsilo's handler."""
    global _listener
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    if _listener is not None:
        _listener.stop()
        _listener = None


def setup_logging(level: str, log_format: str, worker: str = "") -> None:
    """Install (or replace) sipsilo's stderr handler on the root logger."""
    global _listener
    first = _listener is None
    stop_logging()  # the lines queued so far go out in the format they were logged in
    _optimise_records()
    out = _BatchedStream(sys.stderr)
    out.setFormatter(JsonFormatter(worker) if log_format == "json"
                     else text_formatter(worker))
    lines = _Lines()
    handler = _QueueHandler(lines)  # type: ignore[arg-type]
    setattr(handler, _HANDLER_MARK, True)
    _listener = _BatchingListener(lines, out)
    _listener.start()
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())
    if first:
        atexit.register(stop_logging)
