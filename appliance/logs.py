"""Structured logs: one JSON object per line, with the service name on each line.

Lines go to stderr (so ``--json`` output on stdout stays clean) and to
``<state>/logs/methtrader.jsonl``. On a terminal, ``run`` shows the same records to people
instead (:class:`ConsoleFormatter`: time, service, level, message, key fields, coloured); the
file stays JSON lines whatever the terminal gets. Use :func:`service_logger` in a service; secrets never reach
a log call (the config masks them).
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from logging.handlers import RotatingFileHandler
from pathlib import Path

from appliance.paths import StatePaths

ROOT = "methtrader"


def _service(record: logging.LogRecord, default: str | None) -> str:
    return getattr(record, "service", None) or default or (
        record.name.removeprefix(ROOT + ".") or "main")


class JsonFormatter(logging.Formatter):
    """One JSON object a line; ``service`` names records that do not carry one (a library's
    own loggers, e.g. huey's in the job consumer)."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "service": _service(record, self.service),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).strip()
        return json.dumps(entry, default=str)


_LEVEL_COLOURS = {"DEBUG": "2", "INFO": "32", "WARNING": "33", "ERROR": "31;1",
                  "CRITICAL": "31;1"}


class ConsoleFormatter(logging.Formatter):
    """``14:03:07 feed       WARNING exchange outage  symbols=6 backoff_s=10``: one line a
    record for people; ``colour`` adds ANSI colours (levels; dim service and fields)."""

    def __init__(self, colour: bool = False, service: str | None = None) -> None:
        super().__init__()
        self.colour = colour
        self.service = service

    def _paint(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def format(self, record: logging.LogRecord) -> str:
        service = _service(record, self.service)
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        level = record.levelname
        fields = getattr(record, "fields", None) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        line = (f"{when} {self._paint('36', f'{service:<10}')} "
                f"{self._paint(_LEVEL_COLOURS.get(level, '0'), f'{level:<7}')} "
                f"{record.getMessage()}" + (f"  {self._paint('2', extra)}" if extra else ""))
        if record.exc_info:
            line += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        # continuation lines indented, so each record still starts at the left margin
        return line.replace("\n", "\n    ")


CONSOLE_FORMATS = ("json", "text", "colour")
_console = "json"


def stderr_format() -> str:
    """The format :func:`setup_logging` gave stderr, for child processes that share it."""
    return _console


def stderr_handler(console: str, service: str | None = None) -> logging.Handler:
    h = logging.StreamHandler(sys.stderr)
    h.setFormatter(JsonFormatter(service) if console == "json"
                   else ConsoleFormatter(colour=console == "colour", service=service))
    return h


def setup_logging(state_dir: Path | None, level: str = "INFO", *, stderr: bool = True,
                  console: str = "json") -> None:
    """Log to stderr (``console``: ``json`` lines, ``text`` for people, ``colour`` text with
    colours) and, with a state dir, to ``<state>/logs/methtrader.jsonl`` (always JSON)."""
    global _console
    if console not in CONSOLE_FORMATS:
        raise ValueError(f"log format {console!r}: one of {', '.join(CONSOLE_FORMATS)}")
    _console = console
    root = logging.getLogger(ROOT)
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    fmt = JsonFormatter()
    if stderr:
        root.addHandler(stderr_handler(console))
    if state_dir is not None:
        log_dir = StatePaths(state_dir).logs
        log_dir.mkdir(parents=True, exist_ok=True)
        fh = RotatingFileHandler(log_dir / "methtrader.jsonl", maxBytes=50_000_000,
                                 backupCount=5, encoding="utf-8")
        fh.setFormatter(fmt)
        root.addHandler(fh)


class ServiceLogger(logging.LoggerAdapter):
    """``log.info("msg", key=value, ...)``: keyword fields land in the JSON line."""

    def process(self, msg, kwargs):  # type: ignore[override]
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k not in
                  ("exc_info", "stack_info", "stacklevel", "extra")}
        kwargs["extra"] = {"service": self.extra["service"], "fields": fields}
        return msg, kwargs


def service_logger(service: str) -> ServiceLogger:
    return ServiceLogger(logging.getLogger(f"{ROOT}.{service}"), {"service": service})

