"""Redis for scale-out: checking a Redis URL, masking its password, and the optional client.

The ``redis`` client library is an optional extra (``pip install -e '.[redis]'``; ``install.sh
--dev`` includes it): one box needs none of this. Everything here runs when the config is
built, so a bad URL or a missing library stops a command before anything starts.
"""

from __future__ import annotations

import logging
import time
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

SCHEMES = ("redis", "rediss", "unix")
EXTRA_HINT = ("install the redis extra: .venv/bin/python -m pip install -e '.[redis]' "
              "(./install.sh --dev includes it)")


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message never holds the password."""


def mask_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``****``: safe to print and log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    if ":" not in userinfo:
        return url  # a user name alone
    netloc = f"{userinfo.split(':', 1)[0]}:****@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _port(parts) -> int | None:  # type: ignore[no-untyped-def]
    try:
        return parts.port
    except ValueError:
        raise RedisUrlError("its port is not a number in 0..65535") from None


def check_redis_url(url: str) -> None:
    """Raise :class:`RedisUrlError` unless ``url`` is a usable ``redis://``, ``rediss://`` or
    ``unix://`` URL (host, optional port, optional numeric db)."""
    if not url:
        raise RedisUrlError("it is empty; give redis://HOST:PORT/DB, e.g. "
                            "redis://10.0.0.5:6379/0")
    if any(c.isspace() for c in url):
        raise RedisUrlError("it contains white space")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RedisUrlError(f"it is not a URL ({exc})") from None
    if parts.scheme not in SCHEMES:
        raise RedisUrlError(f"its scheme {parts.scheme or '(none)'!r} is not one of "
                            f"{', '.join(s + '://' for s in SCHEMES)}")
    if parts.scheme == "unix":
        if not parts.path.startswith("/"):
            raise RedisUrlError("a unix:// URL needs an absolute socket path, e.g. "
                                "unix:///run/redis/redis.sock")
        return
    if not parts.hostname:
        raise RedisUrlError("it has no host, e.g. redis://10.0.0.5:6379/0")
    _port(parts)
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise RedisUrlError(f"its database {db!r} is not a number (the path is the db index, "
                            "e.g. /0)")


def require_client() -> None:
    """Raise ImportError with what to do when the ``redis`` library is not installed."""
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ImportError(f"the redis client library is not installed; {EXTRA_HINT}") from None


class QueueOutageFilter(logging.Filter):
    """Huey's consumer logs a traceback each time it fails to read Redis (several a second
    while Redis is away). This keeps one short warning per ``every_s`` and drops the rest:
    the consumer keeps retrying by itself, and the log stays readable."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        super().__init__()
        self.every_s, self.clock = every_s, clock
        self.last: float | None = None
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not (str(record.msg).startswith("Error reading") and _is_connection_error(exc)):
            return True
        now = self.clock()
        if self.last is not None and now - self.last < self.every_s:
            self.dropped += 1
            return False
        note = f" ({self.dropped} more since the last note)" if self.dropped else ""
        record.msg = f"job queue unreachable: {exc}; the consumer keeps retrying{note}"
        record.args, record.exc_info, record.exc_text = (), None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        self.last, self.dropped = now, 0
        return True


def _is_connection_error(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    try:
        import redis
    except ImportError:
        return False
    return isinstance(exc, (redis.ConnectionError, redis.TimeoutError))
