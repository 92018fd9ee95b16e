"""Operator notifications: a bus event always, and a Slack-compatible webhook when configured.

Promotions, rejections, archives, freezes and kill-switch changes are an audit row (written by
the caller) and a notification. The bus event is the durable record the TUI and CLI read; the
webhook is best effort. A webhook that is slow or down must never hold up trading, so
:meth:`Notifier.notify` is a plain function that only appends to a bounded in-memory queue, and
a separate sender task (:meth:`Notifier.run`, under the supervisor) does the network work with
retries. When the queue is full the oldest message goes: the newest state matters most.

An on-call person wants one message per problem, not one per crash of a crash loop: a repeat of
the same alert (its ``kind`` and ``key``, e.g. one service's crashes) within ``dedupe_s`` is
counted, not sent, and the next message of that alert says how many were folded into it; over
``max_per_hour`` messages the rest are counted and reported with the next one sent. Both
windows are wall time (a person's hour), read from the injected ``now``.

Payloads: Slack's incoming-webhook format (``text`` plus ``blocks``) or, with ``fmt="json"``, a
plain ``{source, kind, text, data, ts}`` object for any other receiver.

The webhook URL usually carries a secret token in its path, so logs name only scheme://host.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import random
import time
from collections import deque
from typing import Any, Callable

import httpx
import trio

from appliance.bus import Bus
from appliance.contracts import Event
from appliance.logs import service_logger
from appliance.supervision import backoff_delay

log = service_logger("notify")

Message = tuple[str, str, dict[str, Any], float]  # (kind, text, data, wall ts)

JITTER = 0.5
FORMATS = ("slack", "json")


def payload(fmt: str, kind: str, text: str, data: dict[str, Any], ts: float) -> dict[str, Any]:
    """The JSON body POSTed for one message."""
    if fmt == "json":
        return {"source": "methtrader", "kind": kind, "text": text,
                "data": json.loads(json.dumps(data, default=str)), "ts": ts}
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    return {"text": f"[methtrader] {kind}: {text}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{kind}*: {text}"}},
                {"type": "context", "elements": [
                    {"type": "mrkdwn", "text": f"methtrader · {when}"}]}]}


def safe_url(url: str) -> str:
    """``scheme://host`` of a URL: enough to tell which endpoint failed, never its token."""
    try:
        parsed = httpx.URL(url)
    except Exception:
        return "<invalid url>"
    return f"{parsed.scheme}://{parsed.host}"


def retry_after_s(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if unusable."""
    if not value:
        return None
    with contextlib.suppress(ValueError):  # not delta-seconds: try an HTTP date
        return max(0.0, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Notifier:
    """Publishes notifications on the bus and forwards them to a webhook, never blocking."""

    def __init__(self, bus: Bus | None, webhook_url: str | None, *, max_queue: int = 100,
                 attempts: int = 5, backoff_initial_s: float = 0.5, backoff_max_s: float = 30.0,
                 timeout_s: float = 5.0, transport: httpx.AsyncBaseTransport | None = None,
                 rng: random.Random | None = None, fmt: str = "slack", dedupe_s: float = 0.0,
                 max_per_hour: int = 3600, now: Callable[[], float] = time.monotonic) -> None:
        if max_queue < 1 or attempts < 1 or max_per_hour < 1:
            raise ValueError("max_queue, attempts and max_per_hour must be at least 1")
        if fmt not in FORMATS:
            raise ValueError(f"notification format {fmt!r}: one of {', '.join(FORMATS)}")
        if webhook_url:
            try:  # fail at start-up, not on the first promotion
                url = httpx.URL(webhook_url)
            except httpx.InvalidURL:
                raise ValueError("webhook URL is not a valid URL") from None
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"webhook URL must be http(s)://host/...: {safe_url(webhook_url)}")
        self.bus = bus
        self.webhook_url = webhook_url or None
        self.target = safe_url(webhook_url) if webhook_url else None
        self.attempts = attempts
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self._transport = transport
        self._rng = rng or random.Random()
        # Both ends stay here: notify() drops the oldest by receiving from its own queue.
        self._send, self._receive = trio.open_memory_channel[Message](max_queue)
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.fmt = fmt
        self.dedupe_s = dedupe_s
        self.max_per_hour = max_per_hour
        self._now = now
        self._last_sent: dict[tuple[str, str], float] = {}  # alert -> when it last went out
        self._folded: dict[tuple[str, str], int] = {}  # alert -> repeats since then
        self._window: deque[float] = deque()  # when the last hour's messages went out
        self._over_cap = 0  # messages held back by max_per_hour since the last one sent
        self.suppressed = 0

    @property
    def pending(self) -> int:
        """Messages waiting for the sender."""
        return self._receive.statistics().current_buffer_used

    def _admit(self, kind: str, key: str | None, text: str) -> str | None:
        """The text to send for this alert now, or None when it is folded into an earlier
        one (a repeat within ``dedupe_s``) or held back by ``max_per_hour``."""
        now = self._now()
        alert = (kind, key or "")
        last = self._last_sent.get(alert)
        if key is not None and last is not None and now - last < self.dedupe_s:
            self._folded[alert] = self._folded.get(alert, 0) + 1
            self.suppressed += 1
            return None
        while self._window and now - self._window[0] >= 3600.0:
            self._window.popleft()
        if len(self._window) >= self.max_per_hour:
            self._over_cap += 1
            self.suppressed += 1
            return None
        notes = []
        if folded := self._folded.pop(alert, 0):
            notes.append(f"{folded} repeat(s) since the last message")
        if self._over_cap:
            notes.append(f"{self._over_cap} other message(s) held back by the hourly cap")
            self._over_cap = 0
        self._last_sent[alert] = now
        self._window.append(now)
        return text + (f" ({'; '.join(notes)})" if notes else "")

    def notify(self, kind: str, text: str, data: dict[str, Any], key: str | None = None
               ) -> None:
        """Record and queue a notification; returns at once and never raises.

        ``key`` names the alert's subject within its kind (a service, a symbol, a model): a
        repeat of the same (kind, key) within ``dedupe_s`` is counted, not sent; without a key
        nothing is folded (each promotion, each kill switch change). Call it from
        the trio thread (it never awaits, so it cannot be cancelled half-way).
        """
        admitted = self._admit(kind, key, text)
        if admitted is None:
            return
        text = admitted
        if self.bus is not None:
            try:
                self.bus.publish(Event.NOTIFICATION, {"kind": kind, "text": text, "data": data},
                                 service="notify")
            except Exception as exc:
                log.error("notification not published on the bus", kind=kind,
                          error=f"{type(exc).__name__}: {exc}")
        if self.webhook_url is None:
            return
        try:
            message = (kind, text, data, time.time())
            try:
                self._send.send_nowait(message)
            except trio.WouldBlock:
                old_kind = self._receive.receive_nowait()[0]
                self.dropped += 1
                log.warning("notification queue full, dropped the oldest message",
                            dropped_kind=old_kind, dropped=self.dropped)
                self._send.send_nowait(message)
        except Exception as exc:
            log.error("notification not queued", kind=kind, error=f"{type(exc).__name__}: {exc}")

    async def run(self) -> None:
        """Send queued messages one at a time until cancelled (idles when no URL is set)."""
        if self.webhook_url is None:
            await trio.sleep_forever()
        async with httpx.AsyncClient(transport=self._transport,
                                     timeout=httpx.Timeout(self.timeout_s)) as client:
            async for kind, text, data, ts in self._receive:
                try:
                    await self._deliver(client, kind, payload(self.fmt, kind, text, data, ts))
                except Exception as exc:  # one bad message must not kill the sender
                    self.failed += 1
                    log.error("notification dropped", kind=kind, target=self.target,
                              error=self._redact(f"{type(exc).__name__}: {exc}"))

    async def _deliver(self, client: httpx.AsyncClient, kind: str, body: dict[str, Any]
                       ) -> None:
        """POST one message; retry network errors, 5xx and 429; give up after ``attempts``."""
        assert self.webhook_url is not None
        reason = ""
        for attempt in range(self.attempts):
            wait: float | None = None
            try:
                resp = await client.post(self.webhook_url, json=body)
            except httpx.HTTPError as exc:
                reason = self._redact(f"{type(exc).__name__}: {exc}")
            else:
                status = resp.status_code
                if status < 300:
                    self.sent += 1
                    return
                if status != 429 and status < 500:
                    self.failed += 1
                    log.error("webhook rejected the notification, not retrying", kind=kind,
                              target=self.target, status=status, body=self._redact(resp.text[:200]))
                    return
                reason = f"HTTP {status}"
                if status == 429:
                    wait = retry_after_s(resp.headers.get("retry-after"))
            if attempt + 1 < self.attempts:
                delay = backoff_delay(attempt, self.backoff_initial_s, self.backoff_max_s,
                                      JITTER, self._rng.random())
                delay = min(wait, self.backoff_max_s) if wait is not None else delay
                log.warning("webhook delivery failed, retrying", kind=kind, target=self.target,
                            attempt=attempt + 1, error=reason, retry_in_s=round(delay, 3))
                await trio.sleep(delay)
        self.failed += 1
        log.error("notification dropped after retries", kind=kind, target=self.target,
                  attempts=self.attempts, error=reason)

    def _redact(self, message: str) -> str:
        """Exception texts may quote the request URL: replace it with scheme://host."""
        if self.webhook_url:
            message = message.replace(self.webhook_url, str(self.target))
            url = httpx.URL(self.webhook_url)
            for secret in (url.raw_path.decode("ascii", "replace"), url.path, url.query.decode()):
                if len(secret) > 1:
                    message = message.replace(secret, "<redacted>")
        return message
