"""``methtrader bench honesty``: how often the default training path would promote noise.

The full-size no-edge suite (``tests/models/test_no_edge.py`` runs a few seeds of it). Each run
is judged as the appliance judges a model (:mod:`models.honesty`): walk-forward training with
the trading sizing and costs, the candidate gate, a 7-day shadow replay of the exported model
at the recorded costs (Roll's half spread included), then the promotion rule with its defaults.

* ``random_walk``: Gaussian random walks, 3 symbols x 20 days of 5m bars, one seed each;
* ``permuted``: the Bittrex alt/BTC 5m sets (tests/fixtures/real), three per seed, their bars
  in a random order (real return distribution, no serial structure);
* ``sim_drift``: the sim market's five volatile symbols, 30 days (a learnable drift);
* ``bittrex``: the ten Bittrex sets as they are (bid-ask bounce), in two groups.

rf runs with small parameters (``models.honesty.FAST_RF``); other kinds (``kinds=``) with their
defaults.

Figures: per market and kind the runs, the promotions and the promotion rate — the false-
promotion rate on the noise markets, the power on the drift — and how many passed the rule on
their own walk-forward test blocks. Without the fixture folder (an installed copy without the
tests) the two real-data markets are skipped and say so.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from data.loaders import load_file
from models.honesty import SeedRecord, evaluate, permuted, random_walk, sim_drift, summarize

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "real" / "freqtrade"
NOISE_SEEDS = 20
DRIFT_SEEDS = 8
KINDS = ("rf",)  # mlp takes minutes a run here: run(kinds=("rf", "mlp")) for both
DRIFT_SYMBOLS = ("SOLUSDT", "DOGEUSDT", "AVAXUSDT", "NEARUSDT", "LINKUSDT")


def _bittrex() -> dict[str, Any]:
    return {(s := load_file(p)).symbol: s.rows for p in sorted(FIXTURES.glob("*_BTC-5m.json"))}


def run(noise_seeds: int = NOISE_SEEDS, drift_seeds: int = DRIFT_SEEDS,
        kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    records: list[SeedRecord] = []
    sets = _bittrex() if FIXTURES.is_dir() else {}
    names = sorted(sets)
    with tempfile.TemporaryDirectory(prefix="methtrader-honesty-") as tmp:
        root = Path(tmp)

        def one(market: str, candles: dict[str, Any], seed: int, kind: str) -> None:
            records.append(evaluate(root / f"{market}-{kind}-{seed}", f"{market}/{kind}",
                                    candles, seed, kind=kind))

        for kind in kinds:
            for k in range(noise_seeds):
                one("random_walk", random_walk(k), k, kind)
                if names:
                    group = {names[(3 * k + j) % len(names)] for j in range(3)}
                    one("permuted", permuted({s: sets[s] for s in group}, k), k, kind)
            for k in range(drift_seeds):
                one("sim_drift", sim_drift(k, symbols=DRIFT_SYMBOLS, days=30), k, kind)
            for k in range(2 if names else 0):
                one("bittrex", {s: sets[s] for s in names[k::2]}, k, kind)
    figures: dict[str, Any] = {}
    for market, s in summarize(records).items():
        key = market.replace("/", "_")
        figures[f"{key}_runs"] = s["runs"]
        figures[f"{key}_promoted"] = s["promoted"]
        figures[f"{key}_promotion_rate"] = round(s["promotion_rate"], 3)
        figures[f"{key}_wf_would_promote"] = s["wf_would_promote"]
    noise = [r for r in records if r.market.split("/")[0] in ("random_walk", "permuted")]
    figures["noise_runs"] = len(noise)
    figures["noise_false_promotions"] = sum(r.promoted for r in noise)
    figures["noise_false_promotion_rate"] = (round(figures["noise_false_promotions"]
                                                   / len(noise), 3) if noise else None)
    drift = [r for r in records if r.market.startswith("sim_drift")]
    figures["drift_promotion_rate"] = (round(sum(r.promoted for r in drift) / len(drift), 3)
                                       if drift else None)
    bounce = [r for r in records if r.market.startswith("bittrex")]
    if bounce:
        figures["bittrex_tail_sharpe"] = [round(r.tail_sharpe, 2) for r in bounce]
        figures["bittrex_tail_sharpe_free_spread"] = [round(r.tail_sharpe_free_spread, 2)
                                                      for r in bounce]
    else:
        figures["real_fixtures"] = f"not found at {FIXTURES}: permuted and bittrex skipped"
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<40} {value}")
    sys.exit(0)
