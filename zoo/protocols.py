"""The contracts between components, in one place (DESIGN.md, "The composition").

Conventions: tensors in, tensors out; batch first; the ensemble or critic axis first where there is
one ([E, B, D], [N, B, 1]); per-sample scalars are shaped [B, 1]; flags (terminal, is_model) are float32
0/1 tensors shaped [B, 1], so that ``1 - terminal`` is a mask without casts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from zoo.data.transitions import Transitions


@dataclass(frozen=True)
class EnvSpec:
    """Shapes and action bounds a component is built for."""

    obs_dim: int
    act_dim: int
    act_low: float = -1.0
    act_high: float = 1.0

    @property
    def act_scale(self) -> float:
        """a_max of sac.md §1 (symmetric bounds are assumed: a = a_max · tanh(u))."""
        return float(self.act_high)


@dataclass
class Batch:
    """A training batch. Real rows come first (sac.md §3); ``n_real``, when known, is their count as a host
    integer (the trainer's batches carry it), so that a component can skip the real rows without a host sync."""

    obs: torch.Tensor  # [B, d_s]
    act: torch.Tensor  # [B, d_a]
    reward: torch.Tensor  # [B, 1]
    next_obs: torch.Tensor  # [B, d_s]
    terminal: torch.Tensor  # [B, 1] float 0/1
    is_model: torch.Tensor  # [B, 1] float 0/1
    n_real: int | None = None  # rows [0, n_real) are real, the rest model rows; None: not known

    def __len__(self) -> int:
        return self.obs.shape[0]

    def replace(self, **changes: torch.Tensor) -> Batch:
        values: dict[str, Any] = {k: getattr(self, k) for k in TENSOR_FIELDS}
        values.update(changes)
        return Batch(**values, n_real=self.n_real)

    def member(self, k: int) -> Batch:
        """Run k's rows [B, ·] of a population batch [P, B, ·] (views; zoo.engine.population)."""
        return Batch(**{f: getattr(self, f)[k] for f in TENSOR_FIELDS}, n_real=self.n_real)

    @staticmethod
    def stack(batches: list[Batch]) -> Batch:
        """Runs' batches [B, ·] as one population batch [P, B, ·]; one batch gains the axis without a copy."""
        n_real = batches[0].n_real
        if len(batches) == 1:
            return Batch(**{f: getattr(batches[0], f).unsqueeze(0) for f in TENSOR_FIELDS}, n_real=n_real)
        return Batch(**{f: torch.stack([getattr(b, f) for b in batches]) for f in TENSOR_FIELDS}, n_real=n_real)

    def rows_from(self, start: int) -> Batch:
        """Rows [start, B) (a view): with ``start = n_real`` the model rows."""
        values = {k: getattr(self, k)[start:] for k in TENSOR_FIELDS}
        return Batch(**values, n_real=None if self.n_real is None else max(0, self.n_real - start))


TENSOR_FIELDS: tuple[str, ...] = ("obs", "act", "reward", "next_obs", "terminal", "is_model")


@dataclass
class ModelStep:
    """What a dynamics model returns for a batch of (obs, act) (dynamics.md §8)."""

    obs: torch.Tensor  # [B, d_s]
    act: torch.Tensor  # [B, d_a]
    next_obs: torch.Tensor  # [B, d_s]
    reward: torch.Tensor  # [B, 1], raw model reward (no penalty)
    terminal: torch.Tensor  # [B, 1] float 0/1 (filled by the caller's termination function)
    member: torch.Tensor  # [B] long, the member that produced each row
    mean: torch.Tensor  # [E, B, D] per-member means of (Δs, r)
    logvar: torch.Tensor  # [E, B, D] per-member log-variances
    log_prob: torch.Tensor  # [B] log-density of the sample under its member, all D dims


@dataclass
class FitReport:
    """Summary of one ensemble fit (dynamics.md §7)."""

    epochs: int
    holdout_loss: float
    elites: list[int]
    member_holdout: list[float]
    train_loss: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Dynamics(Protocol):
    """Kind ``dynamics``. Built as ``create("dynamics", name, spec, device, **cfg)``.

    Capabilities: a model class may declare ``provides`` (a frozenset of "mean", "variance", "log_prob"); a
    penalty, rule or learner class may declare ``requires`` (or a static ``requirements(cfg)`` when the need
    depends on its config). Resolving a config refuses a combination whose needs the model does not provide
    (zoo.config.check_capabilities); a model without ``provides`` is trusted to provide everything. A model
    without ``log_prob`` (the deterministic ensemble) raises a clear error from ``log_prob`` and ``nll``.
    """

    elites: torch.Tensor  # [|El|] long

    def fit(self, data: Transitions, generator: torch.Generator | None = None) -> FitReport: ...

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of (Δs, r) for every member, each [E, B, D], differentiable."""
        ...

    def step(self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None) -> ModelStep:
        """One sampled transition per row from a random elite; no gradient. terminal is left at 0."""
        ...

    def sample(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        member: torch.Tensor | None = None,
        reparam: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(next_obs, reward): [E, B, d_s], [E, B, 1] for every member, or [B, ...] for one member per row."""
        ...

    def log_prob(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        member: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[B] log-density under one member per row, or under the uniform elite mixture when None."""
        ...

    def nll(self, batch: Batch | Transitions, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss of dynamics.md §5 (optionally per-row weighted) on a batch."""
        ...

    def parameters(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@runtime_checkable
class Penalty(Protocol):
    """Kind ``penalty``. ``stage`` is "rollout" or "target"."""

    stage: str

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """rollout stage: ``(step: ModelStep, ctx) -> [B, 1]`` subtracted from the stored reward; a rollout-stage
        penalty may also have ``halt(step, ctx) -> [B, 1]`` (0/1): those rows are stored terminal and their
        branches stop (MOReL's absorbing HALT state).
        target stage: ``(batch: Batch, learner, ctx) -> [B, 1]``, zero on real rows."""
        ...


@runtime_checkable
class Learner(Protocol):
    """Kind ``learner``. Built as ``create("learner", name, spec, device, **cfg)``."""

    actor: torch.nn.Module
    actor_optimizer: torch.optim.Optimizer

    def act(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action, pre_tanh_action, log_prob [B, 1])."""
        ...

    def log_prob(self, obs: torch.Tensor, pre_tanh_action: torch.Tensor) -> torch.Tensor: ...

    def q(self, obs: torch.Tensor, act: torch.Tensor, target: bool = False) -> torch.Tensor:
        """[N, B, 1]; differentiable w.r.t. obs and act also for the target critics."""
        ...

    def value(self, obs: torch.Tensor, target: bool = False, action: str = "deterministic") -> torch.Tensor: ...

    def update(self, batch: Batch, target_penalty: Any = None) -> dict[str, torch.Tensor]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass
class Context:
    """What the trainer hands to penalties and rules."""

    data: Transitions  # the real dataset, in the space the model lives in (normalized if enabled)
    model: Dynamics
    learner: Learner
    termination: Any  # callable (obs, act, next_obs) -> [B, 1] float, in the model's space
    normalizer: Any  # ObsNormalizer (identity when normalization is off)
    device: torch.device
    generator: torch.Generator
    step: int = 0
    spec: EnvSpec | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Rule:
    """Kind ``rule`` (model-update rule). Every hook is a no-op by default; ``mle`` uses none."""

    every: int = 0  # policy steps between ``update`` calls; 0 means never

    def before_training(self, ctx: Context) -> dict[str, float]:
        return {}

    def on_batch(self, batch: Batch, ctx: Context) -> Batch:
        return batch

    def update(self, ctx: Context) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
