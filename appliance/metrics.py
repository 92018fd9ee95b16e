"""The Prometheus metrics, registered from the start under the user's names.

One :class:`Metrics` object owns its own registry (so tests can build several) and is passed to
the services that update it. ``pairs_total`` (a gauge) and ``trade_latency_ms`` keep the names
the user asked for; the rest follow Prometheus conventions.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.pairs_total = Gauge("pairs_total", "Tradable pairs (24h turnover above the bar)",
                                 registry=r)
        self.datasets_built_total = Counter("datasets_built", "Datasets built", registry=r)
        self.models_trained_total = Counter("models_trained", "Training runs finished",
                                            registry=r)
        self.feature_drift = Gauge("feature_drift", "Feature KL divergence vs the training "
                                   "reference (a symbol's mean over its features)", ["symbol"],
                                   registry=r)
        self.feature_drift_feature = Gauge("feature_drift_feature", "One feature's KL "
                                           "divergence vs the training reference",
                                           ["symbol", "feature"], registry=r)
        self.vol_regime_ratio = Gauge("vol_regime_ratio", "Realised over seasonally profiled "
                                      "5m volatility over the last day", ["symbol"],
                                      registry=r)
        self.drift_retrains_total = Counter("drift_retrains", "Early retrains queued by the "
                                            "drift rule", registry=r)
        self.training_progress = Gauge("training_progress", "Training progress, 0..1",
                                       ["model_id"], registry=r)
        self.trade_latency_ms = Histogram(
            "trade_latency_ms", "Bar close to order sent, milliseconds", registry=r,
            buckets=(0.1, 0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 10, 15, 25, 50, 100, 250, 500, 1000,
                     2500, 5000, 10_000))
        self.service_restarts_total = Counter("service_restarts", "Service restarts",
                                              ["service"], registry=r)
        self.maintenance_mode = Gauge("maintenance_mode", "1 while the kill switch is on",
                                      registry=r)
        self.deploys_frozen = Gauge("deploys_frozen", "1 while auto-deploys are frozen",
                                    registry=r)
        self.candles_ingested_total = Counter("candles_ingested", "Candles written",
                                              ["symbol"], registry=r)
        self.heartbeat_age_seconds = Gauge("heartbeat_age_seconds",
                                           "Seconds since a service last ran its loop",
                                           ["service"], registry=r)
        self.service_up = Gauge("service_up", "1 while a service is running", ["service"],
                                registry=r)
        self.exchange_rate_limit_usage = Gauge(
            "exchange_rate_limit_usage", "Used fraction of an endpoint's rate limit",
            ["endpoint"], registry=r)
        self.orders_refused_total = Counter("orders_refused", "Orders refused by a risk check",
                                            ["reason"], registry=r)
        self.parity_divergence = Gauge("parity_divergence", "|backtest - realised| return "
                                       "of a model over the last day", ["model_id"], registry=r)
        self.portfolio_drawdown = Gauge("portfolio_drawdown", "Drawdown over the risk window",
                                        registry=r)
        self.portfolio_var_95 = Gauge("portfolio_var_95", "1-day historical VaR(95%)",
                                      registry=r)
        self.feed_lag_seconds = Gauge("feed_lag_seconds", "Market seconds the slowest "
                                      "symbol's newest stored candle trails the clock",
                                      registry=r)
        self.market_time_seconds = Gauge("market_time_seconds", "The market clock (epoch s)",
                                         registry=r)
        self.candle_lag_seconds = Gauge("candle_lag_seconds", "Market seconds a symbol's "
                                        "newest stored candle trails the clock", ["symbol"],
                                        registry=r)
        self.disk_used_ratio = Gauge("disk_used_ratio", "Used fraction of the state dir's "
                                     "filesystem", registry=r)
        self.equity_usd = Gauge("equity_usd", "The account's equity by the books (USD)",
                                registry=r)
        self.daily_pnl_usd = Gauge("daily_pnl_usd", "Equity change since the market day "
                                   "began (USD)", registry=r)
        self.gross_exposure_usd = Gauge("gross_exposure_usd", "Sum of |position| x mark over "
                                        "the account's symbols (USD)", registry=r)
        self.orders_total = Counter("orders", "Orders sent to the venue, by outcome",
                                    ["status"], registry=r)
        self.promotions_total = Counter("promotions", "Models that became prod", registry=r)
        self.models = Gauge("models", "Models in the registry, by mode", ["mode"], registry=r)
        self.backfill_progress_ratio = Gauge("backfill_progress_ratio", "Share of a symbol's "
                                             "history window backfilled, 0..1", ["symbol"],
                                             registry=r)
        self.incidents_total = Counter("incidents", "Incidents recorded, by kind", ["kind"],
                                       registry=r)
