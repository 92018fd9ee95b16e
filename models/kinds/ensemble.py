"""``ensemble``: the mean of its members' class probabilities, served as one ONNX graph.

Members must share ``n_features``; they may differ in lookback. The ensemble's window has the
largest member lookback, and each member reads the last rows it needs: ``predict_proba`` hands
every member the whole window (members cut it themselves), and the graph puts a Slice in front of
each member whose lookback is shorter. The graph merges the members' graphs, their names
prefixed ``m<i>_``, and ends in a Mean node, so serving treats it like any other model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from models.kinds.base import (INPUT_NAME, N_CLASSES, OUTPUT_NAME, Progress, TrainedModel,
                               train)


def build_ensemble(members: list[TrainedModel]) -> TrainedModel:
    """An ensemble of already-trained members; probabilities = mean of the members'.

    Its ``loss_curve`` is empty (nothing is trained); ``params["members"]`` lists each member's
    kind and params.
    """
    if not members:
        raise ValueError("an ensemble needs at least one member")
    n_features = {m.n_features for m in members}
    if len(n_features) != 1:
        raise ValueError(f"ensemble members disagree on n_features: {sorted(n_features)}")
    params = {"members": [{"kind": m.kind, "params": m.params} for m in members],
              "lookback": max(m.lookback for m in members), "n_features": n_features.pop()}
    return TrainedModel("ensemble", params, [], list(members))


def _member_specs(members: list[Any]) -> list[tuple[str, dict[str, Any] | None]]:
    specs: list[tuple[str, dict[str, Any] | None]] = []
    for m in members:
        if isinstance(m, str):
            specs.append((m, None))
        elif isinstance(m, dict) and "kind" in m:
            specs.append((str(m["kind"]), m.get("params")))
        else:
            raise ValueError(f"ensemble member must be a kind name or {{'kind', 'params'}}: {m!r}")
    return specs


class EnsembleKind:
    name = "ensemble"
    variable_length = False
    defaults: dict[str, Any] = {"members": ["rf", "mlp", "lstm"]}

    def fit(self, x: np.ndarray, y: np.ndarray, params: dict[str, Any], *, seed: int,
            progress: Progress | None, x_val: np.ndarray | None,
            y_val: np.ndarray | None) -> TrainedModel:
        """Train each member (seed + i) on the same data, then average them."""
        specs = _member_specs(list(params["members"]))
        members = []
        for i, (kind, member_params) in enumerate(specs):
            def member_progress(epoch: int, loss: float, percent: float, i: int = i) -> None:
                if progress is not None:
                    progress(epoch, loss, (100.0 * i + percent) / len(specs))
            members.append(train(kind, x, y, params=member_params, seed=seed + i,
                                 progress=member_progress, x_val=x_val, y_val=y_val))
        return build_ensemble(members)

    def predict_proba(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        probs = [m.predict_proba(x) for m in model.model]
        return np.mean(probs, axis=0, dtype=np.float64).astype(np.float32)

    def to_onnx(self, model: TrainedModel) -> onnx.ModelProto:
        lookback, n_features = model.lookback, model.n_features
        nodes: list[onnx.NodeProto] = []
        initializers: list[onnx.TensorProto] = [
            numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "ens_ends"),
            numpy_helper.from_array(np.array([1], np.int64), "ens_axes")]
        value_info: list[onnx.ValueInfoProto] = []
        functions: list[onnx.FunctionProto] = []
        opsets: dict[str, int] = {}
        ir_version = 0
        outputs = []
        for i, member in enumerate(model.model):
            prefix = f"m{i}_"
            proto = onnx.compose.add_prefix(member.to_onnx(), prefix)
            graph = proto.graph
            if member.lookback == lookback:
                nodes.append(helper.make_node("Identity", [INPUT_NAME], [prefix + INPUT_NAME]))
            else:
                starts = f"ens_starts_{i}"
                initializers.append(numpy_helper.from_array(
                    np.array([-member.lookback], np.int64), starts))
                nodes.append(helper.make_node("Slice", [INPUT_NAME, starts, "ens_ends",
                                                        "ens_axes"], [prefix + INPUT_NAME]))
            nodes.extend(graph.node)
            initializers.extend(graph.initializer)
            value_info.extend(graph.value_info)
            functions.extend(proto.functions)
            for opset in proto.opset_import:
                if opsets.setdefault(opset.domain, opset.version) != opset.version:
                    raise ValueError(f"members use different opsets for domain "
                                     f"{opset.domain!r}: {opsets[opset.domain]} and "
                                     f"{opset.version}")
            ir_version = max(ir_version, proto.ir_version)
            outputs.append(prefix + OUTPUT_NAME)
        nodes.append(helper.make_node("Mean", outputs, [OUTPUT_NAME]))
        graph = helper.make_graph(
            nodes, "ensemble",
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                           ["batch", lookback, n_features])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT,
                                           ["batch", N_CLASSES])],
            initializer=initializers, value_info=value_info)
        return helper.make_model(
            graph, functions=functions, ir_version=ir_version,
            opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])


KIND = EnsembleKind()
