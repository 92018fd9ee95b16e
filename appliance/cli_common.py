"""What every CLI command shares: building the config from its flags and printing its answer."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from appliance.config import Config, build_config
from appliance.paths import StatePaths


def load_config(args: argparse.Namespace, **general: Any) -> Config:
    overrides: dict[str, dict[str, Any]] = {
        "general": {"state_dir": getattr(args, "state_dir", None),
                    "exchange": getattr(args, "exchange", None), **general},
        "bybit": {"base_url": getattr(args, "base_url", None)},
        "replay": {"folder": getattr(args, "replay_folder", None)},
    }
    return build_config(getattr(args, "config", None), overrides=overrides)


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    try:
        if getattr(args, "json", False):
            print(json.dumps(data, default=str))
        else:
            print(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `methtrader status | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def state_bus(cfg: Config):
    """The bus of an existing state dir (refusing any other directory)."""
    from appliance.bus import Bus
    from appliance.safety import require_state_dir

    require_state_dir(cfg.state_path)
    return Bus(StatePaths(cfg.state_path).bus, events_maxlen=cfg.bus.events_maxlen,
               command_deadline_s=cfg.bus.command_deadline_s)
