"""Formatting for the screens: every helper accepts anything and shows "—" when a value is
missing or malformed, so a half-written snapshot from the appliance never crashes the UI."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from rich.text import Text

DASH = "—"

KIND_LABELS = {"rf": "RF", "mlp": "MLP", "lstm": "LSTM", "ddqn": "DDQN", "ensemble": "ensemble"}
STATUS_STYLES = {"queued": "dim", "running": "bold cyan", "completed": "green",
                 "failed": "bold red", "skipped": "yellow",
                 "starting": "cyan", "backoff": "yellow", "stopped": "dim"}


def get(data: Any, *keys: Any) -> Any:
    """``data[k1][k2]...`` or None when any level is missing or not a mapping/sequence."""
    for key in keys:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def as_float(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def num(value: Any, digits: int = 2) -> str:
    number = as_float(value)
    return DASH if number is None else f"{number:,.{digits}f}"


def integer(value: Any) -> str:
    number = as_float(value)
    return DASH if number is None else f"{int(number):,d}"


def money(value: Any) -> str:
    number = as_float(value)
    return DASH if number is None else f"${number:,.2f}"


def signed(value: Any, digits: int = 2) -> str:
    number = as_float(value)
    return DASH if number is None else f"{number:+,.{digits}f}"


def pnl(value: Any, digits: int = 2) -> Text:
    """Signed P&L, green when positive and red when negative."""
    number = as_float(value)
    if number is None:
        return Text(DASH, style="dim")
    style = "green" if number > 0 else "red" if number < 0 else ""
    return Text(f"{number:+,.{digits}f}", style=style)


def percent(value: Any, digits: int = 0) -> str:
    """A fraction in [0, 1] as a percentage."""
    number = as_float(value)
    return DASH if number is None else f"{number * 100:.{digits}f}%"


def seconds(value: Any) -> str:
    number = as_float(value)
    if number is None:
        return DASH
    if number < 120:
        return f"{number:.1f} s"
    if number < 7200:
        return f"{number / 60:.1f} min"
    return f"{number / 3600:.1f} h"


def timestamp(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Epoch seconds or milliseconds (anything past year 5000 in seconds is taken as ms), UTC."""
    number = as_float(value)
    if number is None:
        return DASH
    if number > 1e11:
        number /= 1000
    try:
        return dt.datetime.fromtimestamp(number, dt.timezone.utc).strftime(fmt)
    except (OverflowError, OSError, ValueError):
        return DASH


def text(value: Any) -> str:
    return DASH if value is None or value == "" else str(value)


def clip(value: Any, width: int) -> str:
    """``text(value)`` cut to ``width`` cells with an ellipsis."""
    label = text(value)
    return label if len(label) <= width else label[: width - 1] + "…"


def kind(value: Any) -> str:
    return KIND_LABELS.get(str(value).lower(), text(value)) if value is not None else DASH


def status(value: Any) -> Text:
    label = text(value)
    return Text(label, style=STATUS_STYLES.get(label, ""))


def bar(value: Any, width: int = 20) -> Text:
    """A progress bar for a percentage in [0, 100]."""
    number = as_float(value)
    if number is None:
        return Text(DASH, style="dim")
    number = min(max(number, 0.0), 100.0)
    full = round(number / 100 * width)
    style = "green" if number >= 100 else "cyan"
    out = Text("█" * full, style=style)
    out.append("░" * (width - full), style="dim")
    out.append(f" {number:5.1f}%")
    return out


def healthy(value: Any) -> Text:
    if value is None:
        return Text(DASH, style="dim")
    return Text("ok", style="green") if value else Text("DEGRADED", style="bold red")
