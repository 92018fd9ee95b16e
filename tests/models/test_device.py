"""The training device: picked once per run from ``training.device``, falling back to the CPU."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from models.kinds import train
from models.kinds.torch_common import on_device, resolve_device, train_device


def test_cpu_is_cpu_and_auto_is_cuda_only_where_torch_sees_it() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_it_trains_on_the_cpu_and_says_so(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="methtrader.training"):
        assert resolve_device("cuda") == "cpu"
    assert "sees no CUDA device" in caplog.text


def test_an_unknown_device_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="auto.*cpu.*cuda"):
        resolve_device("tpu")


def test_a_model_trained_on_a_device_comes_back_on_the_cpu() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 1, 4)).astype(np.float32)
    y = (x[:, -1, 0] > 0).astype(np.int64) * 2
    device = resolve_device("auto")
    with on_device(device):
        assert train_device().type == device
        model = train("mlp", x, y, params={"epochs": 1, "hidden": [8]}, seed=0)
    assert train_device().type == "cpu"  # the choice ends with the run
    assert {p.device.type for p in model.model.parameters()} == {"cpu"}
    assert model.predict_proba(x).shape == (256, 3)
