"""Model kinds: ``rf``, ``mlp``, ``lstm``, ``ensemble`` and ``ddqn``, each exported to ONNX.

``KINDS`` maps a kind's name to its implementation (``ModelKind``); kinds join with
``register``. ``train(kind, x, y, ...)`` returns a ``TrainedModel`` whose ``predict_proba``
runs the framework and whose ``export_onnx`` writes the graph serving runs; ``ddqn`` learns
from rewards instead of labels (``models.kinds.ddqn.fit_rl``). The contract is in
``models.kinds.base``.
"""

from __future__ import annotations

from models.kinds import ddqn, ensemble, lstm, mlp, rf
from models.kinds.base import (CLASS_NAMES, CLASSES, INPUT_NAME, KINDS, META_CLASSES, META_KIND,
                               META_LOOKBACK, META_N_FEATURES, META_PARAMS, OUTPUT_NAME,
                               ModelKind, Progress, TrainedModel, get_kind, register, train)
from models.kinds.ensemble import build_ensemble

for _module in (rf, mlp, lstm, ensemble, ddqn):
    register(_module.KIND)

__all__ = ["CLASSES", "CLASS_NAMES", "INPUT_NAME", "KINDS", "META_CLASSES", "META_KIND",
           "META_LOOKBACK", "META_N_FEATURES", "META_PARAMS", "OUTPUT_NAME", "ModelKind",
           "Progress", "TrainedModel", "build_ensemble", "get_kind", "register", "train"]
