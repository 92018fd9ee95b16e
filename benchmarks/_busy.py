"""A training process that keeps one core busy, for ``bench trading --busy N``.

It trains a small torch MLP (one thread) over and over on synthetic windows, at the niceness
the job consumer runs its jobs at (``jobs.niceness``), until it is terminated: the load that
nightly retraining puts on the machine while ``run`` decides bars.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="methtrader-busy-training")
    ap.add_argument("--niceness", type=int, default=0)
    args = ap.parse_args(argv)
    if args.niceness > 0:
        os.nice(args.niceness)
    import torch

    from models.kinds import train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4096, 1, 15)).astype(np.float32)
    y = rng.integers(0, 3, size=4096)
    print("ready", flush=True)
    seed = 0
    while True:
        train("mlp", x, y, params={"epochs": 5}, seed=seed)
        seed += 1


if __name__ == "__main__":
    sys.exit(main())
