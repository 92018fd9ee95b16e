"""Structured logs: one JSON object per line, with the service name on each line.

Lines go to stderr (so ``--json`` output on stdout stays clean) and to
``<state>/logs/methtrader.jsonl``. Use :func:`service_logger` in a service; secrets never reach
a log call (the config masks them).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from logging.handlers import RotatingFileHandler
from pathlib import Path

from appliance.paths import StatePaths

ROOT = "methtrader"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "service": getattr(record, "service", record.name.removeprefix(ROOT + ".") or "main"),
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).strip()
        return json.dumps(entry, default=str)


def setup_logging(state_dir: Path | None, level: str = "INFO", *, stderr: bool = True) -> None:
    root = logging.getLogger(ROOT)
    root.handlers.clear()
    root.setLevel(level)
    root.propagate = False
    fmt = JsonFormatter()
    if stderr:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(fmt)
        root.addHandler(h)
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

