"""Build the clock and the exchange the config asks for (sim, replay or bybit)."""

from __future__ import annotations

import calendar
import functools
import math
import time
from pathlib import Path
from typing import Callable

from appliance.clock import Clock, ClockFileError, RealClock, load_virtual_clock
from appliance.config import Config
from appliance.exchange.base import Exchange
from appliance.paths import StatePaths


class StartupError(RuntimeError):
    """The appliance (or a command) cannot start; the message says why and what to do."""


def make_clock(cfg: Config) -> Clock:
    """sim and replay run on a virtual clock saved in the state dir; bybit on the wall clock."""
    try:
        return _make_clock(cfg)
    except ClockFileError as exc:
        raise StartupError(str(exc)) from None


def _make_clock(cfg: Config) -> Clock:
    if cfg.general.exchange == "sim":
        start = math.floor(time.time() / 60) * 60.0
        return load_virtual_clock(cfg.state_path, cfg.general.speed, start)
    if cfg.general.exchange == "replay":
        from appliance.exchange.base import ExchangeError
        from appliance.exchange.replay import replay_start_ms

        start = _parse_date(cfg.replay.start) if cfg.replay.start else None
        series, refused, _ = _replay_data(cfg)
        if not series:  # say which files were refused and why, not "no series in []"
            why = "; ".join(f"{p.name}: {r}" for p, r in refused[:5])
            raise StartupError(f"replay: no usable candle files in {cfg.replay.folder}"
                               + (f" ({why})" if why else " (the folder is empty)"))
        try:
            first = replay_start_ms(series, start)
        except ExchangeError as exc:
            raise StartupError(str(exc)) from None
        return load_virtual_clock(cfg.state_path, cfg.general.speed, first / 1000)
    return RealClock()


def _parse_date(text: str) -> int:
    for fmt in ("%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return int(calendar.timegm(time.strptime(text, fmt)) * 1000)
        except ValueError:
            continue
    raise StartupError(f"replay.start {text!r} is not a date; use YYYY-MM-DD or "
                       "'YYYY-MM-DD HH:MM' (UTC)")


@functools.lru_cache(maxsize=4)
def _load_replay(folder: str):
    from appliance.exchange.replay import load_replay_folder

    return load_replay_folder(Path(folder))


def _replay_data(cfg: Config):
    """The folder's candle series, refused files and funding series, loaded once per
    process."""
    if not cfg.replay.folder:
        raise StartupError("replay needs a folder of candle files: set replay.folder in the "
                           "config or --replay-folder DIR")
    folder = Path(cfg.replay.folder).expanduser().resolve()
    if not folder.is_dir():
        raise StartupError(f"replay folder {folder} does not exist")
    return _load_replay(str(folder))


def make_exchange(cfg: Config, clock: Clock,
                  on_usage: Callable[[str, float], None] | None = None) -> Exchange:
    """``on_usage(endpoint, fraction)`` receives rate-limit readings (bybit only)."""
    kind = cfg.general.exchange
    if kind == "sim":
        from appliance.exchange.base import ExchangeError
        from appliance.exchange.sim import SimExchange

        try:
            account = StatePaths(cfg.state_path).sim_account
            return SimExchange(clock, cfg.sim, account_file=account)
        except ExchangeError as exc:
            raise StartupError(str(exc)) from None
    if kind == "replay":
        from appliance.exchange.replay import ReplayExchange

        from appliance.exchange.base import ExchangeError
        from appliance.logs import service_logger

        series, refused, funding = _replay_data(cfg)
        try:
            exchange = ReplayExchange(clock, cfg.replay.folder, taker_fee=cfg.sim.taker_fee,
                                      slippage_bps=cfg.sim.slippage_bps,
                                      starting_balance=cfg.sim.starting_balance,
                                      loaded=(series, refused), funding=funding)
        except ExchangeError as exc:
            raise StartupError(str(exc)) from None
        log = service_logger("exchange")
        for path, reason in exchange.refused:
            log.warning("replay file skipped", file=str(path), reason=reason)
        return exchange
    from appliance.exchange.base import ExchangeError
    from appliance.exchange.bybit import BybitExchange, BybitSettings

    b = cfg.bybit
    try:
        settings = BybitSettings(
            network=b.network, base_url=b.base_url or None, paper=b.paper,
            api_key=b.api_key or None, api_secret=b.api_secret or None,
            recv_window_ms=b.recv_window_ms, max_retries=b.max_retries,
            backfill_concurrency=b.backfill_concurrency, paper_taker_fee=cfg.sim.taker_fee,
            paper_slippage_bps=cfg.sim.slippage_bps,
            paper_starting_balance=cfg.sim.starting_balance)
        return BybitExchange(settings, on_usage=on_usage)
    except (ValueError, ExchangeError) as exc:
        raise StartupError(f"bybit: {exc}") from None
