"""A group's panel (models.dataset.build_panel): too little history is NotEnoughHistory, the
error the training job turns into a `skipped` run instead of a failure huey retries."""

from __future__ import annotations

import pytest

from models.dataset import DataSpec, build_panel
from models.walkforward import NotEnoughHistory

from .test_feature_parity import sim_history


def test_a_group_with_no_history_or_too_little_shared_history_is_not_enough_history():
    spec = DataSpec(horizon=6)
    with pytest.raises(NotEnoughHistory, match="no symbol of the group has enough history"):
        build_panel({}, spec)  # the lake lost the group's files
    with pytest.raises(NotEnoughHistory, match="no symbol"):
        build_panel(sim_history(["BTCUSDT"], 150), spec)
    apart = sim_history(["BTCUSDT", "ETHUSDT"], 400)
    apart["ETHUSDT"] = apart["ETHUSDT"].copy()
    apart["ETHUSDT"][:, 0] += 300 * 60_000  # only 100 bars in common
    with pytest.raises(NotEnoughHistory, match="share only 100"):
        build_panel(apart, spec)
