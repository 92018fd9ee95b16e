"""A study's setup as the weekly study's jobs carry it: built from the config, through JSON job
args and back, the winner's training device included (``training.device``)."""

from __future__ import annotations

import json

from appliance.automl import setup_from_json, setup_of, setup_to_json
from appliance.config import build_config


def test_the_setup_carries_the_training_device_through_the_job_args(tmp_path):
    cfg = build_config(None, overrides={"general": {"state_dir": str(tmp_path)},
                                        "training": {"device": "cuda"},
                                        "automl": {"max_train_samples": 5_000}})
    setup = setup_of(cfg)
    assert setup.device == "cuda" and setup.max_train_samples == 5_000
    args = json.loads(json.dumps(setup_to_json(setup)))  # as huey queues them
    assert setup_from_json(args) == setup


def test_job_args_queued_before_devices_train_on_the_cpu(tmp_path):
    cfg = build_config(None, overrides={"general": {"state_dir": str(tmp_path)}})
    args = setup_to_json(setup_of(cfg))
    del args["device"]
    assert setup_from_json(args).device == "cpu"
