"""``methtrader bench train``: time to train each kind on a nightly run's data, on two cores.

Budget (issue 4): the nightly retrain of 50 symbols takes under 30 minutes. One group here is 10
symbols x 90 days of 5-minute bars pooled (259,200 rows x 15 features); 50 symbols are five such
groups, trained one after the other, so their time is extrapolated as 5x (training time is
linear in rows for every kind at fixed epochs and trees). Each kind trains with its defaults
(``KINDS[kind].defaults``), torch on one thread (``TRAIN_THREADS``). The windows are a strided
view of the feature matrix, as the training service can pass them, so the lstm's (rows, 32, 15)
windows are never copied.

``--device`` (auto, cpu, cuda; default cpu) picks where the torch kinds train, as
``training.device`` does (CUDA that torch cannot see falls back to the CPU); the figure names
the device used.

Walk-forward is included by arithmetic: a run fits ``training.folds`` expanding folds and a refit,
each on the rows before its test block less the early-stopping share, capped at
``max_train_samples``; ``walk_forward_factor`` is their total rows over the timed fit's rows.

CPU seconds are reported beside the wall clock (``*_cpu_s``; rf's trees grow on two threads, so
its CPU seconds exceed its wall time on a quiet machine): on a shared machine they are the
figures that do not move with the load, reported at the start and the end.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from models.dataset import DataSpec
from models.features import FEATURE_NAMES
from models.kinds import KINDS, train
from models.kinds.torch_common import on_device, resolve_device
from models.training import DEFAULT_FOLDS
from models.validation import EARLY_STOP_FRACTION

GROUP_SYMBOLS = 10
SYMBOLS = 50
ROWS = GROUP_SYMBOLS * 90 * 288
BUDGET_S = 30 * 60
KINDS_TIMED = ("rf", "mlp", "lstm")


def _data(rows: int, lookback: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows, lookback, F) windows over one feature matrix, and noisy learnable labels."""
    rng = np.random.default_rng(seed)
    n_features = len(FEATURE_NAMES)
    feats = rng.normal(size=(rows + lookback - 1, n_features)).astype(np.float32)
    windows = sliding_window_view(feats, lookback, axis=0).transpose(0, 2, 1)
    signal = windows[:, -1, 0] + 0.5 * windows[:, :, 1].mean(axis=1)
    y = np.digitize(signal + rng.normal(0.0, 1.0, rows), [-0.6, 0.6])
    return windows, y


def walk_forward_factor(rows: int, folds: int = DEFAULT_FOLDS) -> float:
    """Rows fitted by a walk-forward run (its folds and the refit) per row of one full fit."""
    cap = DataSpec().max_train_samples
    keep = 1.0 - EARLY_STOP_FRACTION
    fits = [min(cap, keep * k * rows / (folds + 1)) for k in range(1, folds + 1)]
    fits.append(min(cap, keep * rows))
    return sum(fits) / rows


def run(rows: int = ROWS, device: str = "cpu") -> dict[str, Any]:
    used = resolve_device(device)
    figures: dict[str, Any] = {"train_rows_per_group": rows, "train_device": used,
                               "train_budget_50_symbols_s": BUDGET_S}
    figures["load_average_1m_start"] = round(os.getloadavg()[0], 2)
    total = cpu_total = 0.0
    for kind in KINDS_TIMED:
        lookback = int(KINDS[kind].defaults["lookback"])
        x, y = _data(rows, lookback)
        start, cpu_start = time.perf_counter(), time.process_time()
        with on_device(used):
            model = train(kind, x, y, seed=0)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        cpu_total += cpu * SYMBOLS / GROUP_SYMBOLS
        figures[f"train_{kind}_group_cpu_s"] = round(cpu, 1)
        group_share = elapsed * SYMBOLS / GROUP_SYMBOLS
        total += group_share
        figures[f"train_{kind}_group_s"] = round(elapsed, 1)
        figures[f"train_{kind}_50_symbols_s"] = round(group_share, 1)
        figures[f"train_{kind}_final_loss"] = round(model.loss_curve[-1], 4)
    factor = walk_forward_factor(rows)
    figures["train_all_kinds_50_symbols_s"] = round(total, 1)
    figures["walk_forward_factor"] = round(factor, 2)
    figures["train_all_kinds_50_symbols_walk_forward_s"] = round(total * factor, 1)
    figures["train_within_budget"] = total * factor < BUDGET_S
    figures["train_all_kinds_50_symbols_walk_forward_cpu_s"] = round(cpu_total * factor, 1)
    figures["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    return figures


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<40} {value}")
    sys.exit(0)
