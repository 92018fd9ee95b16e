"""Operator notifications: a bus event always, and a Slack-compatible webhook when configured.

Promotions, rejections, archives, freezes and kill-switch changes are an audit row (written by
the caller) and a notification. The bus event is the durable record the TUI and CLI read; the
webhook is best effort. A webhook that is slow or down must never hold up trading, so
:meth:`Notifier.notify` is a plain function that only appends to a bounded in-memory queue, and
a separate sender task (:meth:`Notifier.run`, under the supervisor) does the network work with
retries. When the queue is full the oldest message goes: the newest state matters most.

The webhook URL usually carries a secret token in its path, so logs name only scheme://host.
"""

from __future__ import annotations

import contextlib
import email.utils
import random
import time
from typing import Any

import httpx
import trio

from appliance.bus import Bus
from appliance.contracts import Event
from appliance.logs import service_logger
from appliance.supervision import backoff_delay

log = service_logger("notify")

Message = tuple[str, str]  # (kind, text)

JITTER = 0.5


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
                 rng: random.Random | None = None) -> None:
        if max_queue < 1 or attempts < 1:
            raise ValueError("max_queue and attempts must be at least 1")
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

    @property
    def pending(self) -> int:
        """Messages waiting for the sender."""
        return self._receive.statistics().current_buffer_used

    def notify(self, kind: str, text: str, data: dict[str, Any]) -> None:
        """Record and queue a notification; returns at once and never raises.

        Call it from the trio thread (it never awaits, so it cannot be cancelled half-way).
        """
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
            try:
                self._send.send_nowait((kind, text))
            except trio.WouldBlock:
                old_kind, _ = self._receive.receive_nowait()
                self.dropped += 1
                log.warning("notification queue full, dropped the oldest message",
                            dropped_kind=old_kind, dropped=self.dropped)
                self._send.send_nowait((kind, text))
        except Exception as exc:
            log.error("notification not queued", kind=kind, error=f"{type(exc).__name__}: {exc}")

    async def run(self) -> None:
        """Send queued messages one at a time until cancelled (idles when no URL is set)."""
        if self.webhook_url is None:
            await trio.sleep_forever()
        async with httpx.AsyncClient(transport=self._transport,
                                     timeout=httpx.Timeout(self.timeout_s)) as client:
            async for kind, text in self._receive:
                try:
                    await self._deliver(client, kind, text)
                except Exception as exc:  # one bad message must not kill the sender
                    self.failed += 1
                    log.error("notification dropped", kind=kind, target=self.target,
                              error=self._redact(f"{type(exc).__name__}: {exc}"))

    async def _deliver(self, client: httpx.AsyncClient, kind: str, text: str) -> None:
        """POST one message; retry network errors, 5xx and 429; give up after ``attempts``."""
        assert self.webhook_url is not None
        payload = {"text": f"[methtrader] {kind}: {text}"}
        reason = ""
        for attempt in range(self.attempts):
            wait: float | None = None
            try:
                resp = await client.post(self.webhook_url, json=payload)
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
