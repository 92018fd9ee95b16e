"""Sample weighting by return size (models.reward) and the weighted draw of training samples."""

from __future__ import annotations

import numpy as np
import pytest

from models.dataset import DataSpec, build_panel
from models.reward import sample_weights

from .test_feature_parity import sim_history


def test_big_moves_in_risk_units_weigh_more_and_the_future_beyond_the_horizon_is_unseen():
    rng = np.random.default_rng(0)
    steps = rng.normal(0, 0.001, 600)
    steps[300:330] += 0.002  # a steady climb: a large move for little risk
    close = 100 * np.exp(np.cumsum(steps))
    for risk in ("sharpe", "sortino", "calmar"):
        w = sample_weights(close, 6, risk)
        assert np.isnan(w[-6:]).all() and np.isfinite(w[:-6]).all()
        assert np.nanmin(w) >= 0.0 and np.nanmax(w) <= 10.0
        assert w[300:320].mean() > 2.5 * np.nanmedian(w), risk
        later = close.copy()
        later[400:] *= 1.5
        assert np.array_equal(sample_weights(later, 6, risk)[:390], w[:390])
    assert sample_weights(close, 6, "none") is None
    with pytest.raises(ValueError):
        sample_weights(close, 6, "omega")


def test_weighted_panels_draw_big_move_rows_more_often():
    data = sim_history(["BTCUSDT", "ETHUSDT"], 3000)
    spec = DataSpec(horizon=6)
    plain = build_panel(data, spec)
    weighted = build_panel(data, spec, risk="sharpe")
    assert plain.weights is None and weighted.weights.shape == (3000, 2)
    rows = np.arange(3000)
    x0, y0 = plain.samples(rows, limit=1000, seed=1)
    x1, y1 = weighted.samples(rows, limit=1000, seed=1)
    assert len(y1) == 1000 == len(y0)
    flat = 1  # the flat class is where moves are small: weighting draws fewer of them
    assert (y1 == flat).mean() < (y0 == flat).mean()
