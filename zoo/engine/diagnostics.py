"""Model diagnostics (issue 12, item 6): how good is the model, and does the penalty know where it is wrong?

Measured after pretraining and after every rule phase, on held-out data, in the model's space (normalized
observations when ``data.normalize_obs``):

- **k-step open-loop error** (k = 1, 5, 10): from the first state s_i of a dataset window of 10 consecutive
  transitions of one trajectory, the model is fed the dataset's actions and its own predictions,
  ŝ_{j+1} = ŝ_j + mean_{e ∈ elites} μ_e(ŝ_j, a_{i+j}) (the elite mean of the members' mean deltas, no sampling),
  and ``model/kstep_k`` = mean over windows and dimensions of ((ŝ_k − s_{i+k}) / σ_d)², σ_d the dataset's
  per-dimension observation std. 1 is the error of predicting the dataset mean; a perfect model scores 0.
  Windows start at rows the model held out when it was fitted (the later rows of a window may be training rows);
  ``model/held_out`` is 0 when those rows are unknown (a model cached before they were recorded): then any rows.
- **penalty ranking**: ``model/penalty_spearman`` = Spearman's rank correlation, over held-out rows, between the
  recipe's penalty u(s, a) and the model's one-step error mean_d ((ŷ_d − y_d) / σ_d)², y = [s' − s, r] and σ the
  dataset's per-dimension std of y. Recipes without a penalty (``none``) have no such value.

Randomness comes from a private generator seeded by the run's seed, and torch's global RNG is restored after,
so a run computes the same policy with or without its diagnostics. A few hundred rows keep it cheap.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.data.transitions import Transitions
from zoo.protocols import Batch

KS: tuple[int, ...] = (1, 5, 10)
MAX_ROWS = 256  # held-out windows and rows per diagnosis


def window_starts(data: Transitions, length: int) -> torch.Tensor:
    """Rows i such that rows i … i+length−1 are consecutive transitions of one trajectory: no terminal or
    timeout before the last of them, and every next_obs equal to the following row's obs."""
    n = len(data)
    if n < length:
        return torch.zeros(0, dtype=torch.long, device=data.obs.device)
    joined = torch.zeros(n, dtype=torch.bool, device=data.obs.device)  # row i continues into row i+1
    if n > 1:
        joined[:-1] = (
            (data.terminal[:-1, 0] == 0) & (data.timeout[:-1, 0] == 0) & (data.next_obs[:-1] == data.obs[1:]).all(1)
        )
    if length == 1:
        return torch.arange(n, device=data.obs.device)
    breaks = torch.cat([torch.zeros(1, device=joined.device, dtype=torch.long), torch.cumsum(~joined, 0)])
    # rows i … i+length−2 must all be joined: no break among them
    starts = torch.arange(n - length + 1, device=joined.device)
    ok = breaks[starts + length - 1] - breaks[starts] == 0
    return starts[ok]


def elite_mean(model: Any, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """[B, D]: the mean over elite members of the members' predicted means of y = [s' − s, r]."""
    mean, _ = model(obs, act)
    return mean[model.elites].mean(0)


@torch.no_grad()
def open_loop_error(
    model: Any, data: Transitions, starts: torch.Tensor, ks: tuple[int, ...], scale: torch.Tensor
) -> dict[int, float]:
    """k → mean over windows and dimensions of ((ŝ_k − s_k) / scale)² (the module docstring's k-step error)."""
    obs_dim = data.obs_dim
    state = data.obs[starts]
    errors: dict[int, float] = {}
    for j in range(max(ks)):
        state = state + elite_mean(model, state, data.act[starts + j])[:, :obs_dim]
        if j + 1 in ks:
            errors[j + 1] = float(((state - data.next_obs[starts + j]) / scale).pow(2).mean())
    return errors


@torch.no_grad()
def one_step_error(model: Any, data: Transitions, rows: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """[R]: mean over dimensions of ((ŷ − y) / scale)² per row, y = [s' − s, r]."""
    pred = elite_mean(model, data.obs[rows], data.act[rows])
    target = torch.cat([data.next_obs[rows] - data.obs[rows], data.reward[rows]], dim=-1)
    return ((pred - target) / scale).pow(2).mean(-1)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1…n; tied values share the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    ranks = np.empty(len(x))
    ranks[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
    _, tie_group = np.unique(x, return_inverse=True)
    return (np.bincount(tie_group, ranks) / np.bincount(tie_group))[tie_group]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation: the Pearson correlation of the average ranks (ties share their mean rank)."""
    rx, ry = average_ranks(x), average_ranks(y)
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def penalty_values(penalty: Any, data: Transitions, rows: torch.Tensor, ctx: Any) -> torch.Tensor:
    """[R]: the penalty on dataset (s, a) rows, treated as model rows (rollout or target stage)."""
    obs, act = data.obs[rows], data.act[rows]
    with torch.no_grad():
        if getattr(penalty, "stage", "rollout") == "target":
            batch = Batch(
                obs=obs,
                act=act,
                reward=data.reward[rows],
                next_obs=data.next_obs[rows],
                terminal=data.terminal[rows],
                is_model=torch.ones(len(rows), 1, device=obs.device),
            )
            values = penalty(batch, ctx.learner, ctx)
        else:
            values = penalty(ctx.model.step(obs, act, generator=ctx.generator), ctx)
    return values.reshape(len(rows), -1)[:, 0]


@dataclass
class ModelDiagnostics:
    """The held-out windows and rows of one run, chosen once; :meth:`measure` is called after every phase."""

    data: Transitions
    starts: torch.Tensor  # [W] window starts
    rows: torch.Tensor  # [R] held-out rows for the penalty ranking
    obs_scale: torch.Tensor  # [d_s]
    target_scale: torch.Tensor  # [d_s + 1]
    seed: int
    with_penalty: bool = True
    held_out: bool = True  # False: the model's holdout rows are unknown (a cache entry from before they were kept)

    @classmethod
    def prepare(
        cls,
        data: Transitions,
        seed: int,
        holdout_rows: list[int] | None = None,
        max_rows: int = MAX_ROWS,
        with_penalty: bool = True,
    ) -> ModelDiagnostics:
        device = data.obs.device
        generator = torch.Generator(device="cpu").manual_seed(seed + 7919)
        held = torch.as_tensor(holdout_rows if holdout_rows else range(len(data)), dtype=torch.long)
        starts = window_starts(data, max(KS)).cpu()
        held_starts = starts[torch.isin(starts, held)]
        starts = held_starts if len(held_starts) else starts
        starts = starts[torch.randperm(len(starts), generator=generator)[:max_rows]].sort().values
        rows = held[torch.randperm(len(held), generator=generator)[:max_rows]].sort().values
        targets = torch.cat([data.next_obs - data.obs, data.reward], dim=-1)
        return cls(
            data=data,
            starts=starts.to(device),
            rows=rows.to(device),
            obs_scale=data.obs.std(0, unbiased=False).clamp_min(1e-6),
            target_scale=targets.std(0, unbiased=False).clamp_min(1e-6),
            seed=seed,
            with_penalty=with_penalty,
            held_out=bool(holdout_rows),
        )

    def measure(self, model: Any, penalty: Any, ctx: Any) -> dict[str, float]:
        device = self.data.obs.device
        devices = [device] if device.type == "cuda" else []
        out: dict[str, float] = {
            "model/windows": float(len(self.starts)),
            "model/rows": float(len(self.rows)),
            "model/held_out": float(self.held_out),
        }
        with torch.random.fork_rng(devices=devices):  # never move the run's own random streams
            if len(self.starts):
                for k, err in open_loop_error(model, self.data, self.starts, KS, self.obs_scale).items():
                    out[f"model/kstep_{k}"] = err
            if self.with_penalty and len(self.rows) > 1:
                generator = torch.Generator(device=device).manual_seed(self.seed + 104_729)
                private = dataclasses.replace(ctx, generator=generator)
                u = penalty_values(penalty, self.data, self.rows, private)
                err = one_step_error(model, self.data, self.rows, self.target_scale)
                out["model/penalty_spearman"] = spearman(u.cpu().numpy(), err.cpu().numpy())
                out["model/onestep_error"] = float(err.mean())
        return out


def plot_diagnostics(records: list[dict[str, Any]], path: Path) -> Path | None:
    """A PNG of the k-step errors and the penalty ranking across phases (matplotlib, Agg backend)."""
    if not records:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [r["step"] for r in records]
    has_rank = any(math.isfinite(r.get("model/penalty_spearman", float("nan"))) for r in records)
    fig = Figure(figsize=(9 if has_rank else 5, 3.2))  # no pyplot: no global state, no GUI backend
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if has_rank else 1, squeeze=False)
    ax = axes[0, 0]
    for k in KS:
        values = [r.get(f"model/kstep_{k}", float("nan")) for r in records]
        ax.plot(steps, values, marker="o", label=f"k = {k}")
    ax.set_yscale("log")
    ax.set_xlabel("learner step (0 = after pretraining)")
    ax.set_ylabel("normalized MSE")
    ax.set_title("open-loop k-step error (held-out)")
    ax.legend(fontsize=8)
    if has_rank:
        ax = axes[0, 1]
        ax.plot(steps, [r.get("model/penalty_spearman", float("nan")) for r in records], marker="o", color="C3")
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.set_ylim(-1.05, 1.05)
        ax.set_xlabel("learner step")
        ax.set_ylabel("Spearman ρ")
        ax.set_title("penalty vs one-step error")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    return path
