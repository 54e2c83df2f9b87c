"""A deterministic ensemble of MLPs trained by mean squared error: MOReL's dynamics (Kidambi et al., NeurIPS 2020).

Registered as dynamics ``deterministic_ensemble``. E members map ``[s, a]`` to a point prediction of (Δs, r), run as
one batched program through :class:`~zoo.dynamics.layers.EnsembleLinear`. Inputs are standardised with the training
split's statistics, and so are the targets (MOReL scales its residual targets per dimension, by the mean absolute
deviation; we use the standard deviation); predictions are returned in the data's units.

Behind the same ``Dynamics`` protocol as the Gaussian ensemble: ``forward`` returns the means and a log-variance of
−inf (a point mass), ``step`` and ``sample`` return the chosen member's mean. There is no likelihood:
``log_prob`` and ``nll`` raise :class:`NoLikelihoodError`, and components that need one declare it (``requires``)
so that such a recipe is refused when its config is resolved (zoo.config).

MOReL's code (aravindr93/mjrl, branch v2, ``projects/morel``): 4 members, 2 × 512 ReLU, Adam lr 1e-3, no weight
decay, batch 256, 25 epochs, every member on all the data (no bootstrap); those are the defaults here. A holdout
split (``holdout``, capped by ``holdout_cap``) measures every member after each epoch; each member keeps its best
epoch's weights and the ``elites`` best members are the elites (all of them by default, as in MOReL).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import bounded
from zoo.dynamics.ensemble import _adam_kwargs, ensemble_shape_errors, permute_rows, split_for_fit
from zoo.dynamics.layers import EnsembleLinear
from zoo.protocols import EnvSpec, FitReport, ModelStep
from zoo.registry import register

ACTIVATIONS = {"relu": F.relu, "silu": F.silu, "tanh": torch.tanh}


class NoLikelihoodError(TypeError):
    """A likelihood was asked of a model that has none (the deterministic ensemble)."""


@register("dynamics", "deterministic_ensemble")
class DeterministicEnsemble(nn.Module):
    """Ensemble of deterministic MLPs predicting (Δs, r), trained by MSE (MOReL); no variances, no likelihood."""

    provides = frozenset({"mean"})

    @dataclass
    class Config:
        """Architecture and pretraining keys; defaults from MOReL's D4RL config (see the module docstring)."""

        ensemble: int = bounded(4, ge=2)  # disagreement needs two members
        elites: int = bounded(4, ge=1)
        hidden: list[int] = bounded(default_factory=lambda: [512, 512], ge=1)
        activation: str = "relu"
        lr: float = bounded(1e-3, gt=0.0)
        weight_decay: list[float] = bounded(default_factory=lambda: [0.0, 0.0, 0.0], ge=0.0)  # one per layer
        batch_size: int = bounded(256, ge=1)
        max_epochs: int = bounded(25, ge=1)  # the number of epochs (MOReL: fixed, 25)
        holdout: float = bounded(0.1, ge=0.0, lt=1.0)
        holdout_cap: int = bounded(1000, ge=0)
        bootstrap: bool = False  # MOReL trains every member on all the data

    def __init__(self, cfg: Config, spec: EnvSpec, device: torch.device | str = "cpu") -> None:
        super().__init__()
        _validate(cfg)
        self.cfg = cfg
        self.spec = spec
        self.device = torch.device(device)
        self.obs_dim, self.act_dim = int(spec.obs_dim), int(spec.act_dim)
        self.out_dim = self.obs_dim + 1  # [Δs, r]
        in_dim = self.obs_dim + self.act_dim
        sizes = [in_dim, *cfg.hidden, self.out_dim]
        self.layers = nn.ModuleList(
            EnsembleLinear(sizes[i], sizes[i + 1], cfg.ensemble, cfg.weight_decay[i], init="linear", device=self.device)
            for i in range(len(sizes) - 1)
        )
        self.activation = ACTIVATIONS[cfg.activation]
        self.register_buffer("scaler_mean", torch.zeros(in_dim, device=self.device))
        self.register_buffer("scaler_std", torch.ones(in_dim, device=self.device))
        self.register_buffer("target_mean", torch.zeros(self.out_dim, device=self.device))
        self.register_buffer("target_std", torch.ones(self.out_dim, device=self.device))
        self.register_buffer("elites", torch.arange(cfg.elites, device=self.device, dtype=torch.long))

    def model_parameters(self) -> list[torch.Tensor]:
        params: list[torch.Tensor] = []
        for layer in self.layers:
            params += [layer.weight, layer.bias]
        return params

    @property
    def ensemble_size(self) -> int:
        return self.cfg.ensemble

    # -- network ------------------------------------------------------------------------------
    def _normalized(self, x_scaled: torch.Tensor) -> torch.Tensor:
        """Member outputs in target-standardised units, [E, B, D]."""
        h = x_scaled
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < last:
                h = self.activation(h)
        return h

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted (Δs, r) of every member and a log-variance of −inf (a point mass), each [E, B, D]."""
        x = (torch.cat([obs, act], dim=-1) - self.scaler_mean) / self.scaler_std
        mean = self._normalized(x) * self.target_std + self.target_mean
        return mean, torch.full_like(mean, -math.inf)

    def targets(self, obs: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return torch.cat([next_obs - obs, reward], dim=-1)

    # -- sampling (a point mass: the member's mean) -------------------------------------------
    def step(self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None) -> ModelStep:
        """A random elite per row and its prediction; ``log_prob`` is NaN (no density). No gradient."""
        with torch.no_grad():
            mean, logvar = self(obs, act)
            n = obs.shape[0]
            pick = torch.randint(self.elites.numel(), (n,), device=obs.device, generator=generator)
            member = self.elites[pick]
            y = mean[member, torch.arange(n, device=obs.device)]
            return ModelStep(
                obs=obs,
                act=act,
                next_obs=obs + y[:, : self.obs_dim],
                reward=y[:, self.obs_dim :],
                terminal=torch.zeros(n, 1, device=obs.device, dtype=obs.dtype),
                member=member,
                mean=mean,
                logvar=logvar,
                log_prob=torch.full((n,), math.nan, device=obs.device, dtype=obs.dtype),
            )

    def sample(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        member: torch.Tensor | None = None,
        reparam: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(next_obs, reward) of every member [E, B, ·] or of ``member`` [B] per row; gradients when ``reparam``."""
        with torch.enable_grad() if reparam else torch.no_grad():
            mean, _ = self(obs, act)
            if member is not None:
                mean = mean[member, torch.arange(obs.shape[0], device=obs.device)]
            return obs + mean[..., : self.obs_dim], mean[..., self.obs_dim :]

    def sample_next_states(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        n: int,
        generator: torch.Generator | None = None,
        with_reward: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """[n, |El|, B, d_s] next states of the elites (n equal copies of each prediction), as the Gaussian's."""
        with torch.no_grad():
            mean, _ = self(obs, act)
            mean = mean[self.elites].unsqueeze(0).expand(n, -1, -1, -1)
            states = obs + mean[..., : self.obs_dim]
            return (states, mean[..., self.obs_dim :]) if with_reward else states

    # -- no likelihood --------------------------------------------------------------------------
    def log_prob(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NoLikelihoodError(
            "dynamics 'deterministic_ensemble' has no likelihood (point predictions); use dynamics.name="
            "gaussian_ensemble for components that need log-probabilities"
        )

    def nll(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        raise NoLikelihoodError(
            "dynamics 'deterministic_ensemble' has no negative log-likelihood; its training loss is mse(); use "
            "dynamics.name=gaussian_ensemble for components that need a likelihood"
        )

    def mse(self, batch: Any) -> torch.Tensor:
        """The training loss: Σ_e mean_{b,d} of the squared error in standardised target units + weight decay."""
        x = (torch.cat([batch.obs, batch.act], dim=-1) - self.scaler_mean) / self.scaler_std
        y = (self.targets(batch.obs, batch.reward, batch.next_obs) - self.target_mean) / self.target_std
        return self._loss(self._normalized(x), y)

    def _loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        decay = torch.stack([layer.decay_loss() for layer in self.layers]).sum()
        return (pred - target).square().mean(dim=(-2, -1)).sum() + decay

    # -- training -----------------------------------------------------------------------------
    def fit(self, data: Any, generator: torch.Generator | None = None, progress: bool = False) -> FitReport:
        """``max_epochs`` epochs of minibatch MSE; each member keeps its best holdout epoch; elites = best |El|.

        One host read per epoch (the per-member holdout errors)."""
        cfg, dev = self.cfg, self.device
        split = split_for_fit(self, data, cfg.holdout, cfg.holdout_cap, generator)
        generator, inputs, targets = split.generator, split.inputs, split.targets
        n_hold, hold_idx, train_idx = split.n_hold, split.hold_idx, split.train_idx
        with torch.no_grad():
            for buf_mean, buf_std, values in (
                (self.scaler_mean, self.scaler_std, inputs[train_idx]),
                (self.target_mean, self.target_std, targets[train_idx]),
            ):
                std = values.std(0, unbiased=False)
                buf_mean.copy_(values.mean(0))
                buf_std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))
        x = (inputs - self.scaler_mean) / self.scaler_std
        y = (targets - self.target_mean) / self.target_std
        x_tr, y_tr, x_ho, y_ho = x[train_idx], y[train_idx], x[hold_idx], y[hold_idx]
        n_tr, e, bs = x_tr.shape[0], cfg.ensemble, cfg.batch_size
        if cfg.bootstrap:
            index = torch.randint(n_tr, (e, n_tr), device=dev, generator=generator)
        else:
            index = torch.arange(n_tr, device=dev).expand(e, n_tr)
        optimizer = torch.optim.Adam(self.model_parameters(), lr=cfg.lr, **_adam_kwargs(dev))
        for layer in self.layers:
            layer.save()
        best = torch.full((e,), math.inf, device=dev)
        train_loss = math.nan
        for _ in range(cfg.max_epochs):
            index = permute_rows(index, generator)  # every member its own minibatch order
            running = torch.zeros((), device=dev)
            for j in range(math.ceil(n_tr / bs)):
                idx = index[:, j * bs : (j + 1) * bs]
                loss = self._loss(self._normalized(x_tr[idx]), y_tr[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += loss.detach()
            with torch.no_grad():
                err = (self._normalized(x_ho) - y_ho).square().mean(dim=(1, 2))  # [E]
                improved = err < best
                best = torch.where(improved, err, best)
                for layer in self.layers:
                    layer.save(improved)
            train_loss = float(running) / math.ceil(n_tr / bs)
        for layer in self.layers:
            layer.restore()
        order = torch.argsort(best, stable=True)
        self.elites.copy_(order[: cfg.elites])
        best_list, elites = best.tolist(), self.elites.tolist()
        return FitReport(
            epochs=cfg.max_epochs,
            holdout_loss=float(sum(best_list[i] for i in elites) / len(elites)),
            elites=elites,
            member_holdout=best_list,
            train_loss=train_loss,
            extra={"holdout_size": n_hold, "train_size": n_tr, "loss": "mse (standardised targets)"},
        )


def _validate(cfg: Any) -> None:
    errors = ensemble_shape_errors(cfg, 2, " (disagreement needs two members)")
    if cfg.activation not in ACTIVATIONS:
        errors.append(f"activation must be one of {', '.join(ACTIVATIONS)}, got {cfg.activation!r}")
    if cfg.batch_size < 1 or cfg.max_epochs < 1:
        errors.append("batch_size and max_epochs must be >= 1")
    if not 0.0 <= cfg.holdout < 1.0:
        errors.append(f"holdout must be in [0, 1), got {cfg.holdout}")
    if errors:
        raise ValueError("invalid deterministic_ensemble config: " + "; ".join(errors))
