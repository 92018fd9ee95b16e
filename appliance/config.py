"""The one typed, frozen configuration object.

It is built once, in this order of precedence (later wins): defaults, a TOML file, the
environment (``METHTRADER_*``), then command-line flags. Every service receives the same
``Config`` and no module reads the environment on its own.

Bad input never starts anything: an unknown key, a wrong type, a value out of range, two keys
out of order with each other, two environment variables that give one key different values or
an unreadable file raises :class:`ConfigError`, whose message names the key (and the TOML line or
the variable when there is one) and says what is allowed.
"""

from __future__ import annotations

import math
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, get_type_hints

from appliance.redis_support import RedisUrlError, check_redis_url, mask_url, require_client

DEFAULT_STATE_DIR = "~/.local/state/methtrader"
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; /dev/zero must not eat the memory


class ConfigError(ValueError):
    """A configuration problem a user can fix; the message says what and where."""


def _f(default: Any, *, lo: float | None = None, hi: float | None = None,
       choices: tuple[str, ...] | None = None, secret: bool = False, doc: str = "",
       pattern: str | None = None, csv_choices: tuple[str, ...] | None = None,
       required: bool = False) -> Any:
    return field(default=default, repr=not secret, metadata={
        "lo": lo, "hi": hi, "choices": choices, "secret": secret, "doc": doc,
        "pattern": pattern, "csv_choices": csv_choices, "required": required})


@dataclass(frozen=True)
class GeneralConfig:
    state_dir: str = _f(DEFAULT_STATE_DIR, required=True,
                        doc="where DuckDB, the lake, the bus and logs live")
    exchange: str = _f("sim", choices=("sim", "replay", "bybit"))
    speed: float = _f(60.0, lo=0.001, hi=1_000_000.0,
                      doc="virtual seconds per real second (sim and replay)")
    metrics_port: int = _f(9108, lo=0, hi=65535, doc="Prometheus port on 127.0.0.1; 0 disables")
    log_level: str = _f("INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class SimConfig:
    seed: int = _f(7, lo=0, hi=2**31 - 1)
    pairs: int = _f(24, lo=24, hi=400,
                    doc="symbols in the sim universe: the 24 hand-written ones, then generated "
                        "ones (a Bybit-like long tail, ~40% above the $10M bar, listings and "
                        "delistings over time); `fake-bybit --pairs` serves the same universe")
    history_days: int = _f(120, lo=1, hi=3650, doc="days of history before the clock's start")
    slippage_bps: float = _f(2.0, lo=0.0, hi=500.0)
    taker_fee: float = _f(0.00055, lo=0.0, hi=0.01)
    starting_balance: float = _f(100_000.0, lo=0.0, hi=1e12)
    trend_share: float = _f(0.10, lo=0.0, hi=10.0,
                            doc="strength of the sim's learnable drift (share of a minute's "
                                "volatility); after spreads and funding the default leaves "
                                "an edge only on the more volatile symbols")
    delist: str = _f("", pattern=r"(\w+@\d{4}-\d{2}-\d{2}( \d{2}:\d{2})?)(,\w+@\d{4}-\d{2}-\d{2}"
                             r"( \d{2}:\d{2})?)*|",
                     doc="plant delistings: SYMBOL@YYYY-MM-DD[ HH:MM] (UTC), comma-separated; "
                         "announced a day before")
    shock_at: str = _f("", pattern=r"\d{4}-\d{2}-\d{2}( \d{2}:\d{2})?|",
                       doc="plant a regime break: YYYY-MM-DD[ HH:MM] (UTC) from which the "
                           "shocked symbols' returns are shock_vol times larger; empty: none")
    shock_symbols: str = _f("", pattern=r"\w+(,\w+)*|",
                            doc="symbols the regime break hits, comma-separated; empty: all")
    shock_vol: float = _f(3.0, lo=0.1, hi=20.0,
                          doc="the regime break's factor on log returns (1 changes nothing)")


@dataclass(frozen=True)
class SupervisorConfig:
    backoff_initial_s: float = _f(0.2, lo=0.0, hi=60.0)
    backoff_max_s: float = _f(30.0, lo=0.0, hi=3600.0)
    backoff_jitter: float = _f(0.25, lo=0.0, hi=1.0, doc="fraction of the delay added at random")
    max_crashes: int = _f(5, lo=1, hi=1000, doc="crashes within failure_window_s mark it failed")
    failure_window_s: float = _f(300.0, lo=1.0, hi=86400.0)
    failed_retry_s: float = _f(60.0, lo=0.0, hi=86400.0,
                               doc="a failed service is started again after this cool-down")
    heartbeat_interval_s: float = _f(1.0, lo=0.05, hi=60.0)
    stale_after_s: float = _f(10.0, lo=1.0, hi=3600.0, doc="a heartbeat older than this is stale")
    shutdown_timeout_s: float = _f(4.0, lo=0.5, hi=60.0)


@dataclass(frozen=True)
class FeedConfig:
    interval: str = _f("1m", choices=("1m",))
    warmup_minutes: int = _f(900, lo=0, hi=100_000,
                             doc="candles fetched on first start (enough 5m bars to warm the "
                                 "features)")
    max_catchup_minutes: int = _f(1440, lo=1, hi=1_000_000,
                                  doc="minutes fetched per symbol and pass while catching up")
    max_lag_minutes: float = _f(10.0, lo=1.0, hi=1_000_000.0,
                                doc="sim/replay: market time stands still while the feed is "
                                    "further behind than this")
    hot_window_days: int = _f(14, lo=1, hi=3650, doc="candles kept in DuckDB; older live in the lake")


@dataclass(frozen=True)
class DiscoveryConfig:
    interval_s: float = _f(3600.0, lo=10.0, hi=86400.0, doc="full instruments refresh")
    ticker_interval_s: float = _f(30.0, lo=1.0, hi=3600.0,
                                  doc="turnover check; a pair crossing the bar is tradable "
                                      "within this much market time")
    min_turnover_usd: float = _f(10_000_000.0, lo=0.0, hi=1e13,
                                 doc="24h turnover bar for the tradable set")
    quote: str = _f("USDT")
    throttle_usage: float = _f(0.9, lo=0.0, hi=1.0)
    throttle_window_s: float = _f(300.0, lo=1.0, hi=86400.0)
    throttle_factor: float = _f(4.0, lo=1.0, hi=100.0)


@dataclass(frozen=True)
class DatasetsConfig:
    days: int = _f(90, lo=1, hi=3650, doc="history backfilled for a new pair")
    concurrency: int = _f(4, lo=1, hi=64, doc="pairs backfilled at once")
    check_interval_s: float = _f(60.0, lo=1.0, hi=86400.0)
    refresh_interval_s: float = _f(86400.0, lo=60.0, hi=30 * 86400.0,
                                   doc="top up every dataset to the present this often")
    retention_days: int = _f(120, lo=1, hi=36500,
                             doc="the disk guard trims lake days older than this when the lake "
                                 "is what fills the disk")


@dataclass(frozen=True)
class TrainingConfig:
    nightly_at: str = _f("02:00", pattern=r"([01]\d|2[0-3]):[0-5]\d",
                         doc="HH:MM UTC, market time")
    kinds: str = _f("rf,mlp", csv_choices=("rf", "mlp", "lstm"),
                    doc="model kinds trained nightly per group (ensembles on Sundays)")
    timeframes: str = _f("5m", csv_choices=("5m", "1h"),
                         doc="bars the models train and trade on (a model keeps its own)")
    folds: int = _f(4, lo=1, hi=20, doc="walk-forward folds of every training run")
    max_group_size: int = _f(8, lo=1, hi=100)
    disk_threshold: float = _f(0.8, lo=0.0, hi=1.0,
                               doc="archive the worst models when the disk is fuller")
    archive_fraction: float = _f(0.2, lo=0.0, hi=1.0)
    check_interval_s: float = _f(60.0, lo=1.0, hi=86400.0)
    bootstrap_hold_s: float = _f(600.0, lo=0.0, hi=86400.0,
                                 doc="sim/replay: market time waits at most this long (real "
                                     "seconds) for the first models; 0 never waits")
    device: str = _f("auto", choices=("auto", "cpu", "cuda"),
                     doc="where torch models train, picked once per run and recorded: auto = "
                         "CUDA when torch sees it, else the CPU (cuda without one falls back "
                         "to the CPU)")
    job_nice: int = _f(5, lo=0, hi=19,
                       doc="added on top of jobs.niceness for the process each training, "
                           "AutoML or distillation job runs in (nice 15 with the defaults): the "
                           "heaviest work yields the cores to `run` and to the lighter jobs")


@dataclass(frozen=True)
class TradingConfig:
    threshold: float = _f(0.1, lo=0.0, hi=1.0, doc="P(long) - P(short) needed to hold")
    max_symbol_notional: float = _f(25_000.0, lo=0.0, hi=1e12)
    max_gross_exposure: float = _f(100_000.0, lo=0.0, hi=1e12)
    max_leverage: float = _f(3.0, lo=0.0, hi=100.0)
    max_orders_per_minute: int = _f(60, lo=1, hi=100_000)
    max_daily_loss: float = _f(5_000.0, lo=0.0, hi=1e12)
    delisting_lead_s: float = _f(3600.0, lo=0.0, hi=30 * 86400.0,
                                 doc="close positions this long before a delisted symbol "
                                     "settles (market time)")
    rehearse_ms: float = _f(5.0, lo=0.0, hi=200.0,
                            doc="from a bar's close until it arrives, go over the last bar's "
                                "path to its orders this often, changing nothing, so that "
                                "the bar finds it in cache (wall ms; 0: never)")
    allocation: str = _f("equal_risk", choices=("equal_risk", "equal"),
                         doc="how the account's capital is split across the groups' prod "
                             "books when each opens")


@dataclass(frozen=True)
class ShadowConfig:
    size_fraction: float = _f(0.01, lo=0.0001, hi=1.0, doc="shadow size vs a full-size model")
    period: str = _f("7d", pattern=r"\d+(\.\d+)?[smhdw]", doc="e.g. 7d")
    sharpe_margin: float = _f(0.2, lo=0.0, hi=10.0)
    min_trades: int = _f(20, lo=0, hi=1_000_000)
    psr_threshold: float = _f(0.95, lo=0.0, hi=1.0,
                              doc="the deflated Sharpe ratio (DSR) a shadow must exceed to be "
                                  "promoted; 0 turns the guard off (the key keeps its old name)")
    trials_lookback_days: float = _f(90.0, lo=1.0, hi=3650.0,
                                     doc="the DSR's trials: the group's shadows started this "
                                         "many days back (an AutoML study counts once)")
    max_shadows_per_group: int = _f(2, lo=1, hi=20)
    nightly_at: str = _f("00:30", pattern=r"([01]\d|2[0-3]):[0-5]\d", doc="HH:MM UTC")
    parity_bound: float = _f(0.02, lo=0.0, hi=10.0,
                             doc="|simulated - realised| return over a day before an incident")


@dataclass(frozen=True)
class DriftConfig:
    """Feature drift and early retraining (:mod:`appliance.services.drift`)."""

    window: str = _f("3d", pattern=r"\d+(\.\d+)?[mhdw]",
                     doc="live feature values per symbol the KL is taken over (market time, on "
                         "the serving model's timeframe)")
    interval: str = _f("1h", pattern=r"\d+(\.\d+)?[mhdw]",
                       doc="market time between drift passes")
    history: str = _f("14d", pattern=r"\d+(\.\d+)?[hdw]",
                      doc="a symbol's own past aggregates the 3σ rule compares with")
    min_history: int = _f(48, lo=2, hi=100_000,
                          doc="past aggregates needed before the rule gives a verdict")
    sigma: float = _f(3.0, lo=0.5, hi=20.0,
                      doc="drift is an aggregate more than this many standard deviations "
                          "above the mean of its history")
    sigma_floor: float = _f(0.4, lo=0.0, hi=5.0,
                            doc="the least standard deviation of log(aggregate) the 3σ line "
                                "is drawn with: a calm history does not put the line within "
                                "an ordinary volatile spell")
    persist: int = _f(6, lo=1, hi=1000,
                      doc="passes in a row above the 3σ line before it is drift")
    cooldown: str = _f("24h", pattern=r"\d+(\.\d+)?[mhdw]",
                       doc="at most one early retrain of a group per this much market time")
    retrain: bool = _f(True, doc="queue an early retrain when the rule fires (else only "
                                 "event, audit and notification)")
    vol_high: float = _f(2.0, lo=1.0, hi=100.0,
                         doc="seasonal volatility: realised over profiled above this is a high "
                             "regime (once sustained)")
    vol_low: float = _f(0.5, lo=0.0, hi=1.0,
                        doc="seasonal volatility: realised over profiled below this is a low "
                            "regime (once sustained)")
    vol_sustain: int = _f(3, lo=1, hi=1000,
                          doc="drift passes in a row a volatility departure (or return) must "
                              "last to change the regime")


@dataclass(frozen=True)
class AutomlConfig:
    """AutoML studies (:mod:`models.automl`, ``methtrader automl``)."""

    weekly_at: str = _f("Sun 06:00",
                        pattern=r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([01]\d|2[0-3]):[0-5]\d",
                        doc="the weekly study of each group inside `run` (weekday HH:MM, UTC, "
                            "market time); a group's first comes a week after its first prod "
                            "model")
    trials: int = _f(50, lo=1, hi=10_000, doc="trials per study and group (the budget)")
    timeout: str = _f("4h", pattern=r"\d+(\.\d+)?[smhdw]",
                      doc="wall time a study may run; it stops after the trial in progress")
    dsr_threshold: float = _f(0.95, lo=0.0, hi=1.0,
                              doc="the winner's deflated Sharpe ratio on the hold-out block "
                                  "must exceed this before it becomes a candidate")
    kinds: str = _f("rf,mlp,lstm", csv_choices=("rf", "mlp", "lstm"),
                    doc="model kinds the search may pick")
    seed: int = _f(0, lo=0, hi=2**31 - 1, doc="the TPE sampler's and the models' seed")
    max_train_samples: int = _f(200_000, lo=1_000, hi=10_000_000,
                                doc="training samples per trial fit (drawn at random above it)")
    storage: str = _f("file", choices=("file", "redis"),
                      doc="file: the journal <state>/optuna.journal; redis: Optuna's journal "
                          "on jobs.redis_url, shared by the workers of every machine (needs "
                          "jobs.backend = redis)")


@dataclass(frozen=True)
class DistillConfig:
    """Layer 8: a 1h lstm teacher distilled into a 5m ddqn student (:mod:`models.distill`,
    ``methtrader distill``)."""

    weekly: bool = _f(True, doc="distil each group weekly inside `run`")
    weekly_at: str = _f("Sun 12:00",
                        pattern=r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([01]\d|2[0-3]):[0-5]\d",
                        doc="the weekly distillation of each group inside `run` (weekday HH:MM, "
                            "UTC, market time), after AutoML's; a group's first comes a week "
                            "after its first prod model")
    temperature: float = _f(1.0, lo=0.05, hi=100.0,
                            doc="T of the distillation term KL(softmax(Q/T) || teacher) and "
                                "of the student's exported softmax(Q/T)")
    weight: float = _f(1.0, lo=0.0, hi=100.0,
                       doc="weight of the distillation term in the student's loss (0: the "
                           "student learns from rewards alone)")
    episodes: int = _f(40, lo=1, hi=100_000, doc="student episodes per fit")
    episode_bars: int = _f(256, lo=16, hi=1_000_000, doc="5m bars of each episode")
    updates: int = _f(40, lo=1, hi=100_000, doc="gradient steps after each episode")
    teacher_epochs: int = _f(5, lo=1, hi=1_000, doc="epochs of the teacher lstm")
    teacher_lookback: int = _f(32, lo=2, hi=512, doc="hours the teacher lstm reads per window")
    window_days: float = _f(90.0, lo=7.0, hi=3650.0,
                            doc="days of history the teacher and the student train on")
    seed: int = _f(0, lo=0, hi=2**31 - 1)


@dataclass(frozen=True)
class LifecycleConfig:
    keep_retired: int = _f(3, lo=0, hi=100, doc="retired prod models kept per group for "
                                                "rollback; older ones are archived")


@dataclass(frozen=True)
class StoreConfig:
    retention_days: int = _f(400, lo=1, hi=36500,
                             doc="model_bars, fills and equity rows older than this are "
                                 "compacted into daily aggregates")


@dataclass(frozen=True)
class RiskConfig:
    drawdown_window: str = _f("7d", pattern=r"\d+(\.\d+)?[smhdw]", doc="e.g. 7d")
    freeze_drawdown: float = _f(0.08, lo=0.0, hi=1.0)
    unfreeze_drawdown: float = _f(0.04, lo=0.0, hi=1.0)
    var_limit: float = _f(0.0, lo=0.0, hi=1.0, doc="1-day VaR(95%) limit as a fraction; 0 off")


@dataclass(frozen=True)
class NotifyConfig:
    webhook_url: str = _f("", secret=True, doc="Slack-compatible; from METHTRADER_WEBHOOK_URL")
    format: str = _f("slack", choices=("slack", "json"),
                     doc="slack: Slack's incoming-webhook payload (text plus blocks); json: "
                         "{source, kind, text, data, ts} for any other receiver")
    dedupe_s: float = _f(900.0, lo=0.0, hi=86_400.0,
                         doc="wall seconds during which a repeat of the same alert (kind and "
                             "subject, e.g. one service's crashes) is counted, not sent")
    max_per_hour: int = _f(60, lo=1, hi=3600,
                           doc="webhook messages per wall hour at most; the rest are counted "
                               "and reported with the next message")
    daily_at: str = _f("08:00", pattern=r"([01]\d|2[0-3]):[0-5]\d|",
                       doc="daily summary time (HH:MM UTC, market time); empty: none")


@dataclass(frozen=True)
class BybitConfig:
    network: str = _f("testnet", choices=("mainnet", "testnet", "demo"))
    base_url: str = _f("", doc="overrides the network's host, e.g. http://127.0.0.1:PORT "
                               "for the fake server")
    paper: bool = _f(True, doc="live prices, fills by the local paper engine")
    key_file: str = _f("", doc="file (mode 0600) holding the API key and secret, one a line")
    api_key: str = _f("", secret=True, doc="from BYBIT_API_KEY or key_file only")
    api_secret: str = _f("", secret=True, doc="from BYBIT_API_SECRET or key_file only")
    recv_window_ms: int = _f(5000, lo=100, hi=60000)
    max_retries: int = _f(5, lo=0, hi=20)
    backfill_concurrency: int = _f(16, lo=1, hi=64,
                                   doc="kline pages in flight at once (all backfills together; "
                                       "the shared rate budget still paces them): at Bybit's "
                                       "600 requests / 5 s a 40 ms round trip needs ~5")


@dataclass(frozen=True)
class ReplayConfig:
    folder: str = _f("", doc="folder of candle files (Parquet/CSV/JSON) played on the clock")
    start: str = _f("", doc="market time to start at (YYYY-MM-DD UTC); default the first candle")


@dataclass(frozen=True)
class JobsConfig:
    workers: int = _f(1, lo=1, hi=64, doc="huey worker processes")
    niceness: int = _f(10, lo=0, hi=19, doc="added to the job consumer's OS niceness (its "
                                            "workers inherit it): training yields the cores "
                                            "to `run`'s bar → orders path")
    stop_grace_s: float = _f(2.0, lo=0.0, hi=60.0,
                             doc="on stop, time a running job gets before it is interrupted "
                                 "(and re-queued)")
    backend: str = _f("sqlite", choices=("sqlite", "redis"),
                      doc="sqlite: one box (<state>/queue.db); redis: a queue shared with "
                          "`methtrader worker` processes on other machines (needs the `redis` "
                          "extra and jobs.redis_url)")
    redis_url: str = _f("", doc="redis://[:password@]host:port/db (or rediss://, unix://) of "
                                "the shared queue and, with automl.storage = redis, the study; "
                                "its password is masked wherever the config is printed")
    artifact_root: str = _f("", doc="the folder jobs read the lake from (<root>/lake) and write "
                                    "run artifacts to (<root>/artifacts); a mount shared with "
                                    "the workers; default: the state dir")


@dataclass(frozen=True)
class BusConfig:
    events_maxlen: int = _f(10_000, lo=100, hi=10_000_000)
    command_deadline_s: float = _f(60.0, lo=1.0, hi=86400.0,
                                   doc="wall seconds an operator command may wait for `run`; "
                                       "the CLI cancels it then, and `run` drops a stale one")


@dataclass(frozen=True)
class ChaosConfig:
    """The weekly experiment inside ``run`` (:mod:`appliance.services.chaos`) and the injected
    faults of ``methtrader chaos`` (:mod:`appliance.chaos_hook`)."""

    enabled: bool = _f(False, doc="run the weekly chaos experiment inside `run` (sim, replay and "
                                  "paper only) and allow injected faults (chaos_crash, "
                                  "chaos_store_fault, chaos_disk_full) in a paper run; the sim always allows "
                                  "injected faults; with real orders neither ever happens")
    at: str = _f("Sun 04:00", pattern=r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([01]\d|2[0-3]):[0-5]\d",
                 doc="Ddd HH:MM, UTC market time of the weekly experiment, e.g. Sun 04:00 "
                     "(after the nightly training, shadow verdicts and housekeeping)")
    services: str = _f("feed,trading,shadow,risk,training",
                       csv_choices=("feed", "trading", "shadow", "risk", "training"),
                       doc="the services the weekly experiment crashes, one a week, in turn")
    timeout_s: float = _f(300.0, lo=10.0, hi=3600.0,
                          doc="wall seconds the weekly experiment waits for a healthy "
                              "appliance before the crash, and then for recovery; past it the "
                              "run is given up and not held")


@dataclass(frozen=True)
class Config:
    general: GeneralConfig = field(default_factory=GeneralConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    datasets: DatasetsConfig = field(default_factory=DatasetsConfig)
    bybit: BybitConfig = field(default_factory=BybitConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    trading: TradingConfig = field(default_factory=TradingConfig)
    shadow: ShadowConfig = field(default_factory=ShadowConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    automl: AutomlConfig = field(default_factory=AutomlConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    chaos: ChaosConfig = field(default_factory=ChaosConfig)

    @property
    def state_path(self) -> Path:
        return Path(self.general.state_dir).expanduser()

    @property
    def artifact_path(self) -> Path:
        """Where jobs read the lake and write artifacts (``jobs.artifact_root``)."""
        root = self.jobs.artifact_root
        return Path(root).expanduser() if root else self.state_path

    def to_dict(self, mask_secrets: bool = True) -> dict[str, dict[str, Any]]:
        """The effective configuration as plain data; secrets are masked."""
        out: dict[str, dict[str, Any]] = {}
        for sec in fields(self):
            section = getattr(self, sec.name)
            out[sec.name] = {}
            for f in fields(section):
                value = getattr(section, f.name)
                if mask_secrets and f.metadata.get("secret") and value:
                    value = "****"
                elif mask_secrets and (sec.name, f.name) == ("jobs", "redis_url"):
                    value = mask_url(value)
                out[sec.name][f.name] = value
        return out


# -- building -------------------------------------------------------------------------------

def _line_of(text: str, section: str, key: str) -> int | None:
    """Best-effort TOML line number of ``key`` inside ``[section]`` (tomllib keeps none)."""
    current = ""
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        m = re.match(r"^\[([^\]]+)\]", s)
        if m:
            current = m.group(1).strip()
            if not key and current == section:
                return n
            continue
        if key and current == section and re.match(rf"^{re.escape(key)}\s*=", s):
            return n
    return None


def _where(source: str, text: str | None, section: str, key: str) -> str:
    name = f"{section}.{key}" if key else section
    if text is not None:
        line = _line_of(text, section, key)
        if line:
            return f"'{name}' ({source}, line {line})"
    return f"'{name}' ({source})"


def _coerce(value: Any, typ: type, meta: Mapping[str, Any], where: str) -> Any:
    if typ is bool:
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
    elif typ is float:
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):  # nan passes every range check: refuse it by name
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    elif typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        if meta.get("required") and not value.strip():
            raise ConfigError(f"{where}: empty; give a value ({meta['doc']}) or leave it unset "
                              "for the default")
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise ConfigError(f"{where}: {value!r} is out of range [{lo}, {hi}]")
    if choices and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    pattern = meta.get("pattern")
    if pattern and not re.fullmatch(pattern, value):
        raise ConfigError(f"{where}: {value!r} is not in the expected form ({meta['doc']})")
    allowed = meta.get("csv_choices")
    if allowed:
        items = [v.strip() for v in value.split(",") if v.strip()]
        bad = [v for v in items if v not in allowed]
        if bad or not items:
            raise ConfigError(f"{where}: {value!r}: give a comma-separated list of "
                              f"{', '.join(allowed)}")
    return value


def _section_types(cls: type) -> dict[str, type]:
    return get_type_hints(cls)


def _apply(cfg: Config, data: Mapping[str, Any], source: str, text: str | None = None) -> Config:
    sections = {f.name: f for f in fields(Config)}
    new_sections: dict[str, Any] = {}
    for sec_name, values in data.items():
        if sec_name not in sections:
            raise ConfigError(f"unknown section {_where(source, text, sec_name, '')}; "
                              f"known sections: {', '.join(sections)}")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{_where(source, text, sec_name, '')}: expected a table")
        section = new_sections.get(sec_name, getattr(cfg, sec_name))
        types = _section_types(type(section))
        sec_fields = {f.name: f for f in fields(section)}
        changes = {}
        for key, value in values.items():
            where = _where(source, text, sec_name, key)
            if key not in sec_fields:
                raise ConfigError(f"unknown key {where}; known keys in [{sec_name}]: "
                                  f"{', '.join(sec_fields)}")
            changes[key] = _coerce(value, types[key], sec_fields[key].metadata, where)
        new_sections[sec_name] = replace(section, **changes)
    return replace(cfg, **new_sections)


def load_toml(path: Path) -> tuple[dict[str, Any], str]:
    """Read and parse a TOML file: at most ``MAX_CONFIG_BYTES`` of UTF-8 text."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB "
                          "(is it really a TOML file?)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it "
                          "as UTF-8") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


# Environment: METHTRADER_STATE_DIR etc. for the common general keys, and
# METHTRADER__<SECTION>__<KEY> for any key.
_ENV_SHORTCUTS = {
    "METHTRADER_STATE_DIR": ("general", "state_dir"),
    "METHTRADER_EXCHANGE": ("general", "exchange"),
    "METHTRADER_SPEED": ("general", "speed"),
    "METHTRADER_METRICS_PORT": ("general", "metrics_port"),
    "METHTRADER_LOG_LEVEL": ("general", "log_level"),
}


# Where each secret is read from: its environment variable, and for the API keys the key file.
_SECRET_SOURCES = {
    ("bybit", "api_key"): "BYBIT_API_KEY or bybit.key_file",
    ("bybit", "api_secret"): "BYBIT_API_SECRET or bybit.key_file",
    ("notify", "webhook_url"): "METHTRADER_WEBHOOK_URL",
}


def _from_env(env: Mapping[str, str]) -> list[tuple[str, str, str, str]]:
    """``(variable, section, key, value)`` of each ``METHTRADER_*`` variable that sets a key."""
    out: list[tuple[str, str, str, str]] = []
    for name, value in env.items():
        if name in _ENV_SHORTCUTS:
            sec, key = _ENV_SHORTCUTS[name]
        elif name.startswith("METHTRADER__"):
            parts = name[len("METHTRADER__"):].lower().split("__")
            if len(parts) != 2:
                raise ConfigError(f"environment variable {name}: expected "
                                  "METHTRADER__<SECTION>__<KEY>")
            sec, key = parts
        else:
            continue
        out.append((name, sec, key, value))
    return out


def _apply_env(cfg: Config, env: Mapping[str, str]) -> Config:
    """Each variable in turn, named in any error; two variables that set one key must agree."""
    set_by: dict[tuple[str, str], tuple[str, Any]] = {}
    for name, sec, key, value in _from_env(env):
        source = f"environment variable {name}"
        _refuse_secrets({sec: {key: value}}, source, None, f"unset {name}")
        cfg = _apply(cfg, {sec: {key: value}}, source)
        got = getattr(getattr(cfg, sec), key)
        first = set_by.setdefault((sec, key), (name, got))
        if first[1] != got:
            raise ConfigError(f"environment variables {first[0]} and {name} both set "
                              f"'{sec}.{key}', to different values; unset one of them")
    return cfg


def _refuse_secrets(data: Mapping[str, Any], source: str, text: str | None,
                    instead: str = "remove it from the file") -> None:
    defaults = Config()
    for sec in fields(Config):
        for f in fields(getattr(defaults, sec.name)):
            if f.metadata.get("secret") and f.name in data.get(sec.name, {}):
                raise ConfigError(f"{_where(source, text, sec.name, f.name)} is a secret: it is "
                                  f"read only from {_SECRET_SOURCES[sec.name, f.name]}, never "
                                  "from a config file, a flag or METHTRADER__<SECTION>__<KEY>; "
                                  f"{instead} and set it there")


def _secrets(cfg: Config, env: Mapping[str, str]) -> Config:
    """API keys from BYBIT_API_KEY / BYBIT_API_SECRET, else from the 0600 key file."""
    # stripped as the key file's lines are: a stray space or \r is never part of a key
    key, secret = env.get("BYBIT_API_KEY", "").strip(), env.get("BYBIT_API_SECRET", "").strip()
    if bool(key) != bool(secret):  # half a pair signs nothing, and must not hide the key file
        given, lacking = (("BYBIT_API_KEY", "BYBIT_API_SECRET") if key else
                          ("BYBIT_API_SECRET", "BYBIT_API_KEY"))
        raise ConfigError(f"environment variable {given} is set but {lacking} is not; set "
                          "both, or neither (and use bybit.key_file)")
    if not (key and secret) and cfg.bybit.key_file:
        path = Path(cfg.bybit.key_file).expanduser()
        try:
            lines = read_secret_file(path).splitlines()
        except OSError as exc:
            raise ConfigError(f"'bybit.key_file': cannot read {path}: "
                              f"{exc.strerror or exc}") from None
        except ConfigError as exc:
            raise ConfigError(f"'bybit.key_file': {exc}") from None
        key, secret = (line.strip() for line in (lines + ["", ""])[:2])
        if not (key and secret):
            missing = "line 2 (the API secret)" if key else "line 1 (the API key)"
            raise ConfigError(f"'bybit.key_file': {path}: {missing} is missing or empty; put "
                              "the API key on the first line and the secret on the second")
    webhook = env.get("METHTRADER_WEBHOOK_URL", "")
    if webhook:
        check_webhook_url(webhook)
    return replace(cfg, bybit=replace(cfg.bybit, api_key=key, api_secret=secret),
                   notify=replace(cfg.notify, webhook_url=webhook))


def build_config(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Defaults < TOML file < environment < flags (``overrides``), validated at each step.

    Secrets never come from the file or flags: only from the environment or a 0600 key file.
    """
    env = os.environ if env is None else env
    cfg = Config()
    if path is not None:
        data, text = load_toml(Path(path))
        _refuse_secrets(data, str(path), text)
        cfg = _apply(cfg, data, str(path), text)
    cfg = _apply_env(cfg, env)
    if overrides:
        clean = {s: {k: v for k, v in kv.items() if v is not None} for s, kv in overrides.items()}
        cfg = _apply(cfg, {s: kv for s, kv in clean.items() if kv}, "command line")
    _check_pairs(cfg)
    cfg = _secrets(cfg, env)
    _check_redis(cfg)
    return cfg


def _check_pairs(cfg: Config) -> None:
    """Keys whose values must keep an order: each ``low`` is at most its ``high``."""
    pairs = (("risk", "unfreeze_drawdown", "freeze_drawdown",
              "deploys freeze at a drawdown of freeze_drawdown and thaw once it recovers below "
              "unfreeze_drawdown"),
             ("supervisor", "backoff_initial_s", "backoff_max_s",
              "the restart delay starts at backoff_initial_s and doubles up to backoff_max_s"))
    for sec, low, high, why in pairs:
        lo, hi = getattr(getattr(cfg, sec), low), getattr(getattr(cfg, sec), high)
        if lo > hi:
            raise ConfigError(f"'{sec}.{low}' ({lo}) is above '{sec}.{high}' ({hi}): {why}; "
                              f"lower {low} or raise {high}")


def _check_redis(cfg: Config) -> None:
    """The keys that only make sense together: a Redis queue or study needs a good
    ``jobs.redis_url`` and the ``redis`` extra."""
    users = [name for name, on in (("jobs.backend = \"redis\"", cfg.jobs.backend == "redis"),
                                   ("automl.storage = \"redis\"", cfg.automl.storage == "redis"))
             if on]
    if cfg.jobs.backend == "sqlite" and cfg.artifact_path != cfg.state_path:
        raise ConfigError("'jobs.artifact_root' is where workers on other machines write: it "
                          "needs jobs.backend = \"redis\" (their runs come back through it); "
                          "on one box leave it unset")
    if cfg.automl.storage == "redis" and cfg.jobs.backend != "redis":
        raise ConfigError("automl.storage = \"redis\" shares studies with the workers of a Redis "
                          "queue: it needs jobs.backend = \"redis\" too (or keep "
                          "storage = \"file\" on one box)")
    url = cfg.jobs.redis_url
    if url:
        try:
            check_redis_url(url)
        except RedisUrlError as exc:
            raise ConfigError(f"'jobs.redis_url' {mask_url(url)!r}: {exc}") from None
    if not users:
        return
    if not url:
        raise ConfigError(f"{' and '.join(users)} needs 'jobs.redis_url' (e.g. "
                          "redis://10.0.0.5:6379/0); set it in [jobs] or "
                          "METHTRADER__JOBS__REDIS_URL")
    try:
        require_client()
    except ImportError as exc:
        raise ConfigError(f"{' and '.join(users)}: {exc}") from None


def check_webhook_url(url: str) -> None:
    """An http(s) URL with a host, as the notifier will parse it; the message never quotes
    the URL (its path is a secret)."""
    import httpx

    try:
        parsed = httpx.URL(url)
        ok = parsed.scheme in ("http", "https") and bool(parsed.host) and not any(
            c.isspace() for c in url)
    except (httpx.InvalidURL, ValueError, TypeError):
        ok = False
    if not ok:
        raise ConfigError("METHTRADER_WEBHOOK_URL (environment) is not a valid http(s) URL "
                          "with a host, e.g. https://hooks.slack.com/services/...; fix or "
                          "unset it")


_NOT_REGULAR = {"d": "a directory", "p": "a FIFO", "c": "a character device",
                "b": "a block device", "s": "a socket"}


def read_secret_file(path: Path) -> str:
    """Read a secret from a regular file of UTF-8 text only the owner can read (mode 0600 or
    stricter); a symlink is followed and its target checked, before anything is opened."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        kind = _NOT_REGULAR.get(stat.filemode(st.st_mode)[0], "a special file")
        raise ConfigError(f"{path} is {kind}, not a regular file; give a plain file of mode "
                          "0600")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{path} is readable by group or others (mode "
                          f"{stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}")
    # O_NONBLOCK: a FIFO swapped in after the check cannot block the open either
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES // 1024} KiB (is it really "
                          "a secret file?)")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}); save it as "
                          "UTF-8") from None


def config_as_toml(cfg: Config) -> str:
    """The effective config as TOML text (secrets masked), for ``config check``."""
    lines: list[str] = []
    secret = {(sec.name, f.name) for sec in fields(cfg) for f in fields(getattr(cfg, sec.name))
              if f.metadata.get("secret")}
    for sec, values in cfg.to_dict().items():
        lines.append(f"[{sec}]")
        for key, value in values.items():
            if (sec, key) in secret:
                lines.append(f"# {key} = {'set (****)' if value else 'not set'}, from "
                             f"{_SECRET_SOURCES[sec, key]} only")
                continue
            if isinstance(value, bool):
                rendered = "true" if value else "false"
            elif isinstance(value, (int, float)):
                rendered = repr(value)
            else:
                rendered = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
            lines.append(f"{key} = {rendered}")
        lines.append("")
    return "\n".join(lines)

