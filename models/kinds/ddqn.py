"""``ddqn``: a double deep Q-network that trades short / flat / long on one timeframe's bars.

It learns from rewards, not labels, so it is trained with :func:`fit_rl` on an
:class:`RlData` (the kinds registry's ``fit(x, y)`` refuses it with a pointer here):

* actions 0, 1, 2 are the positions -1 (short), 0 (flat), +1 (long), held from a bar's close to
  the next one's; the reward is that next bar's return of the position, less the per-side cost
  (fee + slippage + half spread, :class:`models.costs.CostModel`) times the position change
  (a flip pays twice), scaled by ``reward_scale`` so the Q-values are of order one;
* online and target networks: the target is synced every ``target_sync`` gradient steps, or
  follows the online net by Polyak averaging when ``tau`` > 0; the TD target is double-DQN's
  ``r + gamma * Q_target(s', argmax_a Q_online(s', a))`` under a Huber loss;
* an experience replay buffer (``buffer`` transitions, a ring) holding row indices, actions and
  rewards (states are read back from the windows, which may be a strided view);
* an epsilon-greedy schedule, linear from ``eps_start`` to ``eps_end`` over the first
  ``eps_decay`` share of the episodes;
* distillation: with teacher probabilities, the loss adds ``distill_weight`` times
  KL(softmax(Q / T) || teacher), T = ``temperature``.

An episode is ``episode_bars`` consecutive bars of every symbol at once, acted on by the
online net as it stood at the episode's start (one batched forward), starting flat, followed by
``updates`` gradient steps. The position is not an input: the graph keeps the classifiers'
contract (windows in, (short, flat, long) out), so the trading engine sizes it unchanged; the
fee a change pays is still in every reward, so the Q-values price trading costs on average.

The exported graph outputs softmax(Q / T) in (short, flat, long) order.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import onnx
import torch
from torch import nn

from models.kinds.base import Progress, TrainedModel
from models.kinds.mlp import build_mlp
from models.kinds.torch_common import (ProbabilityNet, export_net, feature_scale, predict_net,
                                       torch_threads, train_device)

RL_THREADS = 1
"""Torch threads while the student trains: its batches are tiny, and a second intra-op thread
costs more than it saves (measured: 7.6 ms a step on one thread, 10.4 ms on two, far worse on
a busy machine where the threads spin waiting for each other)."""
POSITIONS = np.array([-1.0, 0.0, 1.0])
"""The position of each action, in the classes' order (short, flat, long)."""
EpisodeReport = Callable[[dict[str, Any]], None]


class QNet(ProbabilityNet):
    """Standardize -> MLP -> Q-values; ``logits`` are Q / T, so ``forward`` is softmax(Q / T)."""

    def __init__(self, base: ProbabilityNet, temperature: float) -> None:
        super().__init__(base.scale, base.body, base.lookback)
        self.temperature = float(temperature)

    def q(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.scale(x[:, -self.lookback:, :]))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.q(x) / self.temperature


@dataclass(frozen=True)
class RlData:
    """What the agent trades on, bar by bar (row i is a bar; rows of a symbol are consecutive).

    ``x`` (n, >= lookback, F) windows of each bar; ``ret`` (n,) the simple return from the
    bar's close to the next bar's; ``cost`` (n,) the per-side cost fraction of the bar's symbol;
    ``next_ok`` (n,) True where row i + 1 is the next bar of the same symbol and both are
    usable (only those rows start a transition); ``teacher`` (n, 3) probabilities or None.
    """

    x: np.ndarray
    ret: np.ndarray
    cost: np.ndarray
    next_ok: np.ndarray
    teacher: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.x)
        for name in ("ret", "cost", "next_ok"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"RlData.{name} has {len(getattr(self, name))} rows, x has {n}")
        if self.teacher is not None and np.shape(self.teacher) != (n, 3):
            raise ValueError(f"RlData.teacher must be ({n}, 3), got {np.shape(self.teacher)}")


def step_rewards(positions: np.ndarray, ret: np.ndarray, cost: np.ndarray,
                 start: float = 0.0) -> np.ndarray:
    """Reward of holding ``positions[k]`` over the next bar: its return less the cost of
    moving there from the previous position (``start`` before the first)."""
    positions = np.asarray(positions, dtype=np.float64)
    previous = np.concatenate([[start], positions[:-1]])
    return positions * np.asarray(ret) - np.asarray(cost) * np.abs(positions - previous)


def epsilon_at(episode: int, episodes: int, start: float, end: float, decay: float) -> float:
    """Linear from ``start`` (episode 0) to ``end`` at ``decay`` of the episodes, then flat."""
    span = max(1.0, decay * episodes)
    return end + (start - end) * max(0.0, 1.0 - episode / span)


def episode_segments(next_ok: np.ndarray, length: int) -> list[tuple[int, int]]:
    """Maximal runs [a, b) of rows that each have a next bar, at least ``length`` long."""
    ok = np.concatenate([[False], np.asarray(next_ok, dtype=bool), [False]])
    edges = np.flatnonzero(np.diff(ok.astype(np.int8)))
    runs = zip(edges[::2], edges[1::2])
    return [(int(a), int(b)) for a, b in runs if b - a >= length]


def distill_kl(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(softmax(logits) || teacher)."""
    log_p = torch.log_softmax(logits, dim=-1)
    log_t = torch.log(teacher.clamp_min(1e-6))
    return (log_p.exp() * (log_p - log_t)).sum(dim=-1).mean()


class _Replay:
    """A ring of (row, action, reward) transitions."""

    def __init__(self, capacity: int) -> None:
        self.rows = np.zeros(capacity, dtype=np.int64)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.size = self.at = 0

    def add(self, rows: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        cap = len(self.rows)
        for r, a, w in zip(np.array_split(rows, -(-len(rows) // cap)),
                           np.array_split(actions, -(-len(rows) // cap)),
                           np.array_split(rewards, -(-len(rows) // cap))):
            idx = (self.at + np.arange(len(r))) % cap
            self.rows[idx], self.actions[idx], self.rewards[idx] = r, a, w
            self.at = int((self.at + len(r)) % cap)
            self.size = min(cap, self.size + len(r))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(0, self.size, n)


def _tensor(x: np.ndarray, rows: np.ndarray, lookback: int, device: torch.device
            ) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x[rows, -lookback:, :])).to(device)


class _Agent:
    """The online and target nets, their optimiser, and one gradient step."""

    def __init__(self, net: QNet, params: dict[str, Any], device: torch.device) -> None:
        self.net = net.to(device)
        self.target = copy.deepcopy(self.net)
        self.device = device
        self.gamma, self.tau = float(params["gamma"]), float(params["tau"])
        self.sync_every = int(params["target_sync"])
        self.weight = float(params["distill_weight"])
        self.optimiser = torch.optim.Adam(self.net.parameters(), lr=float(params["lr"]))
        self.steps = 0

    def act(self, x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Greedy actions of the online net for the bars ``rows``."""
        self.net.eval()
        with torch.inference_mode():
            q = self.net.q(_tensor(x, rows, self.net.lookback, self.device))
        return q.argmax(dim=-1).cpu().numpy()

    def learn(self, data: RlData, rows: np.ndarray, actions: np.ndarray,
              rewards: np.ndarray) -> float:
        lookback = self.net.lookback
        s = _tensor(data.x, rows, lookback, self.device)
        s2 = _tensor(data.x, rows + 1, lookback, self.device)
        a = torch.from_numpy(actions).to(self.device)
        r = torch.from_numpy(rewards).to(self.device)
        self.net.train()
        with torch.no_grad():
            best = self.net.q(s2).argmax(dim=-1, keepdim=True)
            target = r + self.gamma * self.target.q(s2).gather(1, best).squeeze(1)
        q_all = self.net.q(s)
        loss = nn.functional.smooth_l1_loss(q_all.gather(1, a[:, None]).squeeze(1), target)
        if self.weight > 0 and data.teacher is not None:
            teacher = torch.from_numpy(
                np.ascontiguousarray(data.teacher[rows], dtype=np.float32)).to(self.device)
            loss = loss + self.weight * distill_kl(q_all / self.net.temperature, teacher)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), 10.0)
        self.optimiser.step()
        self.steps += 1
        self._update_target()
        return float(loss.item())

    def _update_target(self) -> None:
        if self.tau > 0:
            with torch.no_grad():
                for t, o in zip(self.target.parameters(), self.net.parameters()):
                    t.mul_(1.0 - self.tau).add_(o, alpha=self.tau)
        elif self.steps % self.sync_every == 0:
            self.target.load_state_dict(self.net.state_dict())


def fit_rl(data: RlData, params: dict[str, Any], *, seed: int,
           progress: Progress | None = None, on_episode: EpisodeReport | None = None
           ) -> TrainedModel:
    """Train a ``ddqn`` on ``data`` (module docstring); params are the kind's defaults
    overridden (``models.kinds.base.merge_params``) plus ``n_features``.

    ``on_episode`` gets each episode's record: episode, episodes, loss (mean of its gradient
    steps), epsilon, mean reward, and ``agreement`` (the share of the episode's bars where the
    greedy action is the teacher's argmax; None without a teacher).
    """
    lookback, episodes = int(params["lookback"]), int(params["episodes"])
    length, updates = int(params["episode_bars"]), int(params["updates"])
    segments = episode_segments(data.next_ok, length)
    if not segments:
        raise ValueError(f"no run of {length} consecutive usable bars to play an episode on "
                         "(lower episode_bars, or train on more history)")
    rng = np.random.default_rng(seed)
    device = train_device()
    with torch_threads(RL_THREADS):
        torch.manual_seed(seed)
        mean, std = feature_scale(data.x[np.flatnonzero(data.next_ok)], seed)
        base = build_mlp(int(params["n_features"]), lookback,
                         [int(h) for h in params["hidden"]], 0.0, mean, std)
        agent = _Agent(QNet(base, float(params["temperature"])), params, device)
        replay = _Replay(int(params["buffer"]))
        scale = float(params["reward_scale"])
        curve: list[float] = []
        for episode in range(episodes):
            eps = epsilon_at(episode, episodes, float(params["eps_start"]),
                             float(params["eps_end"]), float(params["eps_decay"]))
            rows, actions, rewards, greedy = _play(agent, data, segments, length, eps, rng)
            replay.add(rows, actions, (rewards * scale).astype(np.float32))
            losses = []
            for _ in range(updates):
                pick = replay.sample(rng, int(params["batch_size"]))
                losses.append(agent.learn(data, replay.rows[pick], replay.actions[pick],
                                          replay.rewards[pick]))
            curve.append(float(np.mean(losses)) if losses else float("nan"))
            agreement = (None if data.teacher is None else
                         float(np.mean(greedy == data.teacher[rows].argmax(axis=1))))
            if progress is not None:
                progress(episode + 1, curve[-1], 100.0 * (episode + 1) / episodes)
            if on_episode is not None:
                on_episode({"episode": episode + 1, "episodes": episodes, "loss": curve[-1],
                            "epsilon": eps, "reward": float(rewards.mean()),
                            "agreement": agreement})
        net = agent.net.to("cpu").eval()
    return TrainedModel(KIND.name, params, curve, net)


def _play(agent: _Agent, data: RlData, segments: list[tuple[int, int]], length: int,
          eps: float, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One episode: ``length`` bars of up to one segment per run, epsilon-greedy, from flat."""
    starts = [int(rng.integers(a, b - length + 1)) for a, b in segments]
    chosen = rng.permutation(len(starts))[:max(1, min(len(starts), 16))]
    rows_all, actions_all, rewards_all, greedy_all = [], [], [], []
    for i in chosen:
        rows = np.arange(starts[i], starts[i] + length)
        greedy = agent.act(data.x, rows)
        explore = rng.random(length) < eps
        actions = np.where(explore, rng.integers(0, 3, length), greedy)
        rewards = step_rewards(POSITIONS[actions], data.ret[rows], data.cost[rows])
        rows_all.append(rows)
        actions_all.append(actions)
        rewards_all.append(rewards)
        greedy_all.append(greedy)
    return (np.concatenate(rows_all), np.concatenate(actions_all).astype(np.int64),
            np.concatenate(rewards_all), np.concatenate(greedy_all))


def q_values(model: TrainedModel, x: np.ndarray) -> np.ndarray:
    """(batch, 3) Q-values of the online net, in (short, flat, long) order."""
    net: QNet = model.model
    net.eval()
    with torch.inference_mode():
        return net.q(torch.from_numpy(np.ascontiguousarray(
            np.asarray(x, dtype=np.float32)[:, -net.lookback:, :]))).numpy()


class DdqnKind:
    name = "ddqn"
    variable_length = False
    defaults: dict[str, Any] = {
        "lookback": 1, "hidden": [64, 64], "episodes": 40, "episode_bars": 256,
        "updates": 40, "batch_size": 256, "buffer": 100_000, "lr": 1e-3, "gamma": 0.9,
        "target_sync": 100, "tau": 0.0, "eps_start": 1.0, "eps_end": 0.05, "eps_decay": 0.6,
        "reward_scale": 100.0, "temperature": 1.0, "distill_weight": 0.0}

    def fit(self, x: np.ndarray, y: np.ndarray, params: dict[str, Any], *, seed: int,
            progress: Progress | None, x_val: np.ndarray | None,
            y_val: np.ndarray | None) -> TrainedModel:
        raise ValueError("ddqn learns from rewards, not labels: train it with "
                         "models.kinds.ddqn.fit_rl (methtrader distill does)")

    def predict_proba(self, model: TrainedModel, x: np.ndarray) -> np.ndarray:
        return predict_net(model.model, x, model.lookback)

    def to_onnx(self, model: TrainedModel) -> onnx.ModelProto:
        return export_net(model.model, model, dynamic_rows=False)


KIND = DdqnKind()
