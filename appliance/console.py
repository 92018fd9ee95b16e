"""What `methtrader run` shows a person at a terminal: which log format stderr gets, and the
one-screen summary printed before the first log line (where the state lives, which market,
how fast, where the metrics are, how to watch it and how to stop it)."""

from __future__ import annotations

from typing import TextIO

from appliance.config import Config


def console_format(choice: str, stream: TextIO) -> str:
    """``json`` / ``text`` / ``colour`` for stderr: ``auto`` gives coloured text on a terminal
    and JSON lines otherwise (a pipe, systemd's journal, a file)."""
    if choice == "auto":
        return "colour" if stream.isatty() else "json"
    return choice


def startup_summary(cfg: Config, *, for_s: float | None, until_s: float | None) -> str:
    state = cfg.state_path
    market = {"sim": "sim (the simulated market: no network, no keys)",
              "replay": f"replay of {cfg.replay.folder}",
              "bybit": f"bybit {cfg.bybit.network}"
                       + (" (paper fills)" if cfg.bybit.paper else " (REAL ORDERS)")}[
        cfg.general.exchange]
    speed = (f"×{cfg.general.speed:g} (virtual seconds per real second)"
             if cfg.general.exchange != "bybit" else "real time")
    port = cfg.general.metrics_port
    metrics = f"http://127.0.0.1:{port}/metrics" if port else "off (metrics_port = 0)"
    stop = []
    if for_s is not None:
        stop.append(f"after {for_s:g} s of real time")
    if until_s is not None:
        stop.append(f"after {until_s:g} s of market time")
    rows = [("state dir", str(state)), ("market", market), ("speed", speed),
            ("metrics", metrics),
            ("watch", f"methtrader tui --state-dir {state}   (or: methtrader status)"),
            ("stop", "Ctrl-C or SIGTERM (flushes every acknowledged write first)"
             + (f"; stops by itself {' or '.join(stop)}" if stop else "")),
            ("kill switch", f"methtrader kill --state-dir {state} --reason TEXT"),
            ("logs", f"{state / 'logs' / 'methtrader.jsonl'} (JSON lines)")]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["methtrader run", *(f"  {k:<{width}}  {v}" for k, v in rows), ""])
