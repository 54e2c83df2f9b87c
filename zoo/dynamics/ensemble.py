"""The probabilistic Gaussian ensemble world model (dynamics.md), registered as dynamics ``gaussian_ensemble``.

E members, each an MLP ``[s, a] -> (μ, ℓ_raw)`` over D = d_s + 1 outputs ordered ``[Δs, r]`` (§1), run as one
batched program through :class:`~zoo.dynamics.layers.EnsembleLinear`. Inputs are standardised by a scaler fitted
on the training split and stored as buffers (§2); targets are never normalised. Log-variances are soft-clamped
by learnable bounds (§3). ``fit`` implements §5–§7 entirely on the model's device; sampling and log-densities
follow §8–§9.
"""

from __future__ import annotations

import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from zoo.config import bounded
from zoo.dynamics.layers import EnsembleLinear
from zoo.io import atomic_torch_save
from zoo.protocols import EnvSpec, FitReport, ModelStep
from zoo.registry import register

LOG_2PI = math.log(2.0 * math.pi)
MIXTURES = ("logsumexp", "exp_float64")
INFERENCE_CHUNK = 1024  # rows per chunk of a gradient-free forward pass on the CPU
CUDA_INFERENCE_CHUNK = 8192  # on a GPU: 7 members x 200 units x 8192 rows = 46 MB per layer, not 280 MB at 50k rows


class _TransitionLike(Protocol):
    obs: torch.Tensor
    act: torch.Tensor
    reward: torch.Tensor
    next_obs: torch.Tensor


@register("dynamics", "gaussian_ensemble")
class GaussianEnsemble(nn.Module):
    """Gaussian ensemble of E Swish MLPs predicting (Δs, r) with learnable log-variance bounds (dynamics.md)."""

    # What it offers the components that declare ``requires`` (checked when a config is resolved, zoo.config).
    provides = frozenset({"mean", "variance", "log_prob"})

    @dataclass
    class Config:
        """Pretraining and architecture keys (dynamics.md §3, §5–§7, §13). ``max_epochs = 0`` means no cap."""

        ensemble: int = bounded(7, ge=1)
        elites: int = bounded(5, ge=1)
        hidden: list[int] = bounded(default_factory=lambda: [200, 200, 200, 200], ge=1)
        lr: float = bounded(1e-3, gt=0.0)
        weight_decay: list[float] = bounded(default_factory=lambda: [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4], ge=0.0)
        holdout: float = bounded(0.2, ge=0.0, lt=1.0)
        holdout_cap: int = bounded(1000, ge=0)
        patience: int = bounded(5, ge=1)
        max_epochs: int = bounded(0, ge=0)
        logvar_coef: float = bounded(0.01, ge=0.0)
        batch_size: int = bounded(256, ge=1)
        improvement: float = bounded(0.01, ge=0.0)
        logvar_init: list[float] = field(default_factory=lambda: [0.5, -10.0])
        mixture_logprob: str = "logsumexp"

    def __init__(self, cfg: Config, spec: EnvSpec, device: torch.device | str = "cpu") -> None:
        super().__init__()
        _validate(cfg)
        self.cfg = cfg
        self.spec = spec
        self.device = torch.device(device)
        self.obs_dim = int(spec.obs_dim)
        self.act_dim = int(spec.act_dim)
        self.out_dim = self.obs_dim + 1  # D: [Δs, r]
        in_dim = self.obs_dim + self.act_dim
        sizes = [in_dim, *cfg.hidden, 2 * self.out_dim]
        self.layers = nn.ModuleList(
            EnsembleLinear(sizes[i], sizes[i + 1], cfg.ensemble, cfg.weight_decay[i], device=self.device)
            for i in range(len(sizes) - 1)
        )
        hi, lo = cfg.logvar_init
        self.max_logvar = nn.Parameter(torch.full((self.out_dim,), float(hi), device=self.device))
        self.min_logvar = nn.Parameter(torch.full((self.out_dim,), float(lo), device=self.device))
        self.register_buffer("scaler_mean", torch.zeros(in_dim, device=self.device))
        self.register_buffer("scaler_std", torch.ones(in_dim, device=self.device))
        self.register_buffer("elites", torch.arange(cfg.elites, device=self.device, dtype=torch.long))

    # -- parameters ---------------------------------------------------------------------------
    def model_parameters(self) -> list[torch.Tensor]:
        """Fixed-order list: (weight, bias) of every layer, then ℓ_max, ℓ_min; no snapshots (romi.md §2.6)."""
        params: list[torch.Tensor] = []
        for layer in self.layers:
            params += [layer.weight, layer.bias]
        return params + [self.max_logvar, self.min_logvar]

    @property
    def ensemble_size(self) -> int:
        return self.cfg.ensemble

    @property
    def num_elites(self) -> int:
        return self.cfg.elites

    # -- network ------------------------------------------------------------------------------
    def scale(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """x = ([s, a] − μ_x) / σ_x with the stored scaler (dynamics.md §2)."""
        return (torch.cat([obs, act], dim=-1) - self.scaler_mean) / self.scaler_std

    def soft_clamp(self, raw: torch.Tensor) -> torch.Tensor:
        """ℓ₁ = ℓ_max − softplus(ℓ_max − ℓ_raw); ℓ = ℓ_min + softplus(ℓ₁ − ℓ_min) (dynamics.md §3)."""
        upper = self.max_logvar - F.softplus(self.max_logvar - raw)
        return self.min_logvar + F.softplus(upper - self.min_logvar)

    def forward_scaled(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, ℓ) [E, B, D] from already-scaled inputs [B, in] or [E, B, in].

        Without autograd (``torch.no_grad``) the rows run in chunks with in-place activations: the same values,
        less memory traffic on large rollout batches.
        """
        last = len(self.layers) - 1
        if torch.is_grad_enabled():
            h = x
            for i, layer in enumerate(self.layers):
                h = layer(h)
                if i < last:
                    h = F.silu(h)
        else:
            rows = x.shape[-2]
            chunk = max(1, CUDA_INFERENCE_CHUNK if x.device.type == "cuda" else INFERENCE_CHUNK)
            outs = []
            for start in range(0, rows, chunk):
                h = x[..., start : start + chunk, :]
                for i, layer in enumerate(self.layers):
                    h = layer(h)
                    if i < last:
                        h = F.silu(h, inplace=True)
                outs.append(h)
            h = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
        mean, raw = h.split(self.out_dim, dim=-1)
        return mean, self.soft_clamp(raw)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of (Δs, r) for every member, each [E, B, D] (dynamics.md §1).

        ``obs``/``act`` are [B, ·] (the same rows for every member) or [E, B, ·] (one batch per member).
        """
        return self.forward_scaled(self.scale(obs, act))

    # -- loss ---------------------------------------------------------------------------------
    def regularizer(self, logvar_coef: float | None = None) -> torch.Tensor:
        """Σ_l wd_l·½Σ_e‖W_l[e]‖² + c_lv·(Σℓ_max − Σℓ_min) (dynamics.md §5)."""
        coef = self.cfg.logvar_coef if logvar_coef is None else logvar_coef
        decay = torch.stack([layer.decay_loss() for layer in self.layers]).sum()
        return decay + coef * (self.max_logvar.sum() - self.min_logvar.sum())

    def loss(
        self,
        mean: torch.Tensor,
        logvar: torch.Tensor,
        target: torch.Tensor,
        weights: torch.Tensor | None = None,
        include_regularizers: bool = True,
        logvar_coef: float | None = None,
    ) -> torch.Tensor:
        """§5 loss: Σ_e mean_{b,d}[(μ−y)²e^{−ℓ} + ℓ] (rows optionally weighted) + regularisers.

        ``target`` is [B, D] (shared) or [E, B, D]; ``weights`` is [B], [B, 1] or [E, B, 1].
        """
        per = (mean - target).pow(2) * torch.exp(-logvar) + logvar
        if weights is not None:
            if weights.dim() == 1:
                weights = weights.unsqueeze(-1)
            per = per * weights
        total = per.mean(dim=(-2, -1)).sum()
        if include_regularizers:
            total = total + self.regularizer(logvar_coef)
        return total

    def targets(self, obs: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        """y = [s' − s, r] (dynamics.md §2)."""
        return torch.cat([next_obs - obs, reward], dim=-1)

    def nll(
        self,
        batch: _TransitionLike,
        weights: torch.Tensor | None = None,
        include_regularizers: bool = True,
        logvar_coef: float | None = None,
    ) -> torch.Tensor:
        """The training loss of §5 on a batch (same rows for every member, or [E, B, ·] per member).

        ``weights`` ([B, 1]) weight the rows as in romi.md §2.5; ``include_regularizers`` adds the decay and
        bound terms, with ``logvar_coef`` overriding c_lv (RAMBO/ROMBRL model phases use 0.001).
        """
        mean, logvar = self(batch.obs, batch.act)
        y = self.targets(batch.obs, batch.reward, batch.next_obs)
        return self.loss(mean, logvar, y, weights, include_regularizers, logvar_coef)

    # -- sampling -----------------------------------------------------------------------------
    def step(self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None) -> ModelStep:
        """One model step (dynamics.md §8): a random elite per row, s' = s + Δs; no gradient.

        Only the chosen member's Gaussian is drawn for each row, which has the same distribution as drawing
        every member and then picking one. ``terminal`` is zeros: the caller applies the termination function.
        """
        with torch.no_grad():
            mean, logvar = self(obs, act)
            n = obs.shape[0]
            pick = torch.randint(self.elites.numel(), (n,), device=obs.device, generator=generator)
            member = self.elites[pick]
            rows = torch.arange(n, device=obs.device)
            mu, lv = mean[member, rows], logvar[member, rows]
            noise = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
            y = mu + torch.exp(0.5 * lv) * noise
            log_prob = (-0.5 * noise.pow(2) - 0.5 * lv - 0.5 * LOG_2PI).sum(-1)
            return ModelStep(
                obs=obs,
                act=act,
                next_obs=obs + y[:, : self.obs_dim],
                reward=y[:, self.obs_dim :],
                terminal=torch.zeros(n, 1, device=obs.device, dtype=obs.dtype),
                member=member,
                mean=mean,
                logvar=logvar,
                log_prob=log_prob,
            )

    def sample(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        member: torch.Tensor | None = None,
        reparam: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(next_obs, reward): [E, B, d_s], [E, B, 1] from every member, or [B, d_s], [B, 1] from ``member`` [B].

        ``reparam=True`` keeps the graph through μ and σ (ŝ' = s + μ + σ⊙ζ, romi.md §2.4); otherwise no gradient.
        """
        with nullcontext() if reparam else torch.no_grad():
            mean, logvar = self(obs, act)
            if member is not None:
                rows = torch.arange(obs.shape[0], device=obs.device)
                mean, logvar = mean[member, rows], logvar[member, rows]
            noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
            y = mean + torch.exp(0.5 * logvar) * noise
            return obs + y[..., : self.obs_dim], y[..., self.obs_dim :]

    def sample_next_states(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        n: int,
        generator: torch.Generator | None = None,
        with_reward: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """[n, |El|, B, d_s] next states s + μ_e + σ_e⊙ξ from the elites (dynamics.md §8, MOBILE); no gradient.

        ``with_reward=True`` returns (states, rewards [n, |El|, B, 1]).
        """
        with torch.no_grad():
            mean, logvar = self(obs, act)
            dims = self.out_dim if with_reward else self.obs_dim
            mean = mean[self.elites, :, :dims]
            std = torch.exp(0.5 * logvar[self.elites, :, :dims])
            noise = torch.randn((n, *mean.shape), device=mean.device, dtype=mean.dtype, generator=generator)
            y = mean + std * noise
            states = obs + y[..., : self.obs_dim]
            if with_reward:
                return states, y[..., self.obs_dim :]
            return states

    # -- densities ----------------------------------------------------------------------------
    def member_log_prob(
        self, obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor
    ) -> torch.Tensor:
        """[E, B]: log N(y; μ_e, σ_e) summed over all D dims, reward included (dynamics.md §9)."""
        mean, logvar = self(obs, act)
        y = self.targets(obs, reward, next_obs)
        return (-0.5 * (y - mean).pow(2) * torch.exp(-logvar) - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)

    def log_prob(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        next_obs: torch.Tensor,
        reward: torch.Tensor,
        member: torch.Tensor | None = None,
        mixture: str | None = None,
    ) -> torch.Tensor:
        """[B] log-density under ``member`` [B] (one per row), or the uniform elite mixture when None (§9).

        The mixture uses logsumexp by default; ``mixture="exp_float64"`` (or the config key ``mixture_logprob``)
        reproduces the original exp-in-float64 form, which underflows to −inf for far samples.
        """
        lp = self.member_log_prob(obs, act, next_obs, reward)
        if member is not None:
            return lp[member, torch.arange(lp.shape[1], device=lp.device)]
        mode = mixture or self.cfg.mixture_logprob
        if mode not in MIXTURES:
            raise ValueError(f"unknown mixture_logprob {mode!r}; choose one of {', '.join(MIXTURES)}")
        lp = lp[self.elites]
        if mode == "logsumexp":
            return torch.logsumexp(lp, dim=0) - math.log(lp.shape[0])
        return torch.log(torch.exp(lp.double()).mean(0)).to(lp.dtype)

    # -- training -----------------------------------------------------------------------------
    def fit(
        self,
        data: _TransitionLike,
        generator: torch.Generator | None = None,
        progress: bool = False,
    ) -> FitReport:
        """Pretrain by maximum likelihood with holdout early stopping (dynamics.md §5–§7).

        Holdout of min(⌊N·holdout⌋, holdout_cap) rows drawn without replacement; scaler fitted on the rest;
        a bootstrap index matrix [E, N_tr] drawn once and row-permuted every epoch; after every epoch the
        per-member mean-only holdout MSE decides snapshots (relative improvement > ``improvement``); stop
        after ``patience`` epochs without any improvement or at ``max_epochs``; elites = the |El| best; every
        snapshot is restored. Randomness comes from ``generator`` only (a fresh one seeded from torch's RNG
        when None). One host read per epoch.
        """
        cfg = self.cfg
        dev = self.device
        split = split_for_fit(self, data, cfg.holdout, cfg.holdout_cap, generator)
        generator, inputs, targets = split.generator, split.inputs, split.targets
        n_hold, hold_idx, train_idx = split.n_hold, split.hold_idx, split.train_idx
        x_tr, y_tr = inputs[train_idx], targets[train_idx]
        x_ho, y_ho = inputs[hold_idx], targets[hold_idx]

        self.fit_scaler(x_tr)
        x_tr = (x_tr - self.scaler_mean) / self.scaler_std
        x_ho = (x_ho - self.scaler_mean) / self.scaler_std

        n_tr = x_tr.shape[0]
        e = cfg.ensemble
        bootstrap = torch.randint(n_tr, (e, n_tr), device=dev, generator=generator)
        bs = cfg.batch_size
        n_batches = math.ceil(n_tr / bs)

        optimizer = torch.optim.Adam(self.model_parameters(), lr=cfg.lr, **_adam_kwargs(dev))
        for layer in self.layers:
            layer.save()
        best = torch.full((e,), 1e10, device=dev)
        counter = 0
        epoch = 0
        history: list[float] = []
        train_loss = float("nan")
        bar = _progress_bar() if progress else None
        task = bar.add_task("fitting dynamics", total=cfg.max_epochs or None) if bar is not None else None
        try:
            while True:
                bootstrap = permute_rows(bootstrap, generator)
                running = torch.zeros((), device=dev)
                for j in range(n_batches):
                    idx = bootstrap[:, j * bs : (j + 1) * bs]
                    mean, logvar = self.forward_scaled(x_tr[idx])
                    loss = self.loss(mean, logvar, y_tr[idx])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    running += loss.detach()
                epoch += 1
                with torch.no_grad():
                    metric = self.holdout_mse(x_ho, y_ho)
                    improved = (best - metric) / best > cfg.improvement
                    best = torch.where(improved, metric, best)
                    for layer in self.layers:
                        layer.save(improved)
                    elite_loss = torch.sort(best).values[: cfg.elites].mean()
                    summary = torch.cat([improved.any().float().view(1), elite_loss.view(1), running.view(1)])
                any_improved, holdout_now, loss_sum = summary.tolist()  # the one host read per epoch
                train_loss = loss_sum / n_batches
                history.append(holdout_now)
                counter = 0 if any_improved else counter + 1
                if bar is not None and task is not None:
                    bar.update(
                        task, advance=1, description=f"epoch {epoch} holdout {holdout_now:.5f} loss {train_loss:.4f}"
                    )
                if counter >= cfg.patience or (cfg.max_epochs > 0 and epoch >= cfg.max_epochs):
                    break
        finally:
            if bar is not None:
                bar.stop()

        order = torch.argsort(best, stable=True)
        self.elites.copy_(order[: cfg.elites])
        for layer in self.layers:
            layer.restore()
        best_list = best.tolist()
        elites = self.elites.tolist()
        return FitReport(
            epochs=epoch,
            holdout_loss=float(sum(best_list[i] for i in elites) / len(elites)),
            elites=elites,
            member_holdout=best_list,
            train_loss=train_loss,
            extra={
                "holdout_size": n_hold,
                "train_size": n_tr,
                "holdout_history": history,
                "holdout_rows": hold_idx.tolist() if n_hold else [],  # the model diagnostics' held-out rows
            },
        )

    @torch.no_grad()
    def fit_scaler(self, inputs: torch.Tensor) -> None:
        """Per-dim mean and population std of the training inputs; σ < 1e-12 -> 1 (dynamics.md §2)."""
        mean = inputs.mean(0)
        std = inputs.std(0, unbiased=False)
        std = torch.where(std < 1e-12, torch.ones_like(std), std)
        self.scaler_mean.copy_(mean)
        self.scaler_std.copy_(std)

    @torch.no_grad()
    def holdout_mse(self, x_scaled: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[E]: mean-only MSE per member over rows and all D dims, unnormalised targets (dynamics.md §7)."""
        mean, _ = self.forward_scaled(x_scaled)
        return (mean - y).pow(2).mean(dim=(1, 2))

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write config, spec and state (weights, scaler, bounds, elites) atomically to ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "name": "gaussian_ensemble",
            "config": asdict(self.cfg),
            "spec": asdict(self.spec),
            "state": {k: v.detach().cpu() for k, v in self.state_dict().items()},
        }
        atomic_torch_save(payload, path)
        return path

    def load(self, path: str | os.PathLike[str]) -> GaussianEnsemble:
        """Load a file written by :meth:`save` into this model (architecture must match)."""
        payload = torch.load(path, map_location=self.device, weights_only=True)
        saved = payload.get("config", {})
        for key in ("ensemble", "elites", "hidden"):
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise ValueError(
                    f"{path}: saved model has {key}={saved[key]!r}, this model has {getattr(self.cfg, key)!r}"
                )
        self.load_state_dict(payload["state"])
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu") -> GaussianEnsemble:
        """Build a model from a file written by :meth:`save`."""
        payload = torch.load(path, map_location=device, weights_only=True)
        model = cls(cls.Config(**payload["config"]), EnvSpec(**payload["spec"]), device)
        model.load_state_dict(payload["state"])
        return model

    def extra_repr(self) -> str:
        return f"obs_dim={self.obs_dim}, act_dim={self.act_dim}, elites={self.cfg.elites}"


# -- helpers ----------------------------------------------------------------------------------------
@dataclass
class FitSplit:
    """The data of one fit (dynamics.md §6): inputs [N, d_s + d_a], targets [N, d_s + 1] (Δs, r), and the
    holdout / training row indices; ``hold_idx`` is the training rows when the data are too few for a holdout."""

    inputs: torch.Tensor
    targets: torch.Tensor
    train_idx: torch.Tensor
    hold_idx: torch.Tensor
    n_hold: int
    generator: torch.Generator


class _FitsTransitions(Protocol):
    device: torch.device
    obs_dim: int
    act_dim: int

    def targets(self, obs: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor: ...


def split_for_fit(
    model: _FitsTransitions, data: Any, holdout: float, holdout_cap: int, generator: torch.Generator | None
) -> FitSplit:
    """The shared start of every ensemble fit: the data on the model's device in float32, their shapes checked
    against the model, and a holdout of min(⌊N·holdout⌋, cap) rows drawn without replacement from ``generator``
    (a fresh one seeded from torch's RNG when None, so that every draw of the fit comes from one stream)."""
    dev = model.device
    if generator is None:
        generator = torch.Generator(device=dev)
        generator.manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
    obs = data.obs.to(dev, torch.float32)
    act = data.act.to(dev, torch.float32)
    reward = data.reward.to(dev, torch.float32).reshape(-1, 1)
    next_obs = data.next_obs.to(dev, torch.float32)
    n = obs.shape[0]
    if obs.shape[1] != model.obs_dim or act.shape[1] != model.act_dim:
        raise ValueError(
            f"data has obs/act dims ({obs.shape[1]}, {act.shape[1]}) but the model was built for "
            f"({model.obs_dim}, {model.act_dim})"
        )
    if n < 2:
        raise ValueError(f"fit needs at least 2 transitions, got {n}")
    n_hold = holdout_size(n, holdout, holdout_cap)
    perm = torch.randperm(n, device=dev, generator=generator)
    hold_idx, train_idx = perm[:n_hold], perm[n_hold:]
    if n_hold == 0:  # too little data for a holdout: validate on the training split
        hold_idx = train_idx
    inputs = torch.cat([obs, act], dim=-1)
    return FitSplit(inputs, model.targets(obs, reward, next_obs), train_idx, hold_idx, n_hold, generator)


def holdout_size(n: int, ratio: float, cap: int) -> int:
    """H_o = min(⌊N·ratio⌋, cap) (dynamics.md §6); ``cap <= 0`` means no cap."""
    size = int(math.floor(n * ratio))
    if cap > 0:
        size = min(size, cap)
    return max(0, min(size, n - 1))


def permute_rows(index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shuffle every row of ``index`` [E, N] independently (dynamics.md §6 step 5); the multiset is kept."""
    keys = torch.rand(index.shape, device=index.device, generator=generator)
    return torch.gather(index, 1, torch.argsort(keys, dim=1))


def ensemble_shape_errors(cfg: Any, min_members: int = 1, why: str = "") -> list[str]:
    """What is wrong with an ensemble config's members, elites, hidden sizes and per-layer weight decays (shared
    by every batched ensemble family)."""
    errors = []
    if cfg.ensemble < min_members:
        errors.append(f"ensemble must be >= {min_members}{why}, got {cfg.ensemble}")
    if not 1 <= cfg.elites <= cfg.ensemble:
        errors.append(f"elites must be in 1..ensemble={cfg.ensemble}, got {cfg.elites}")
    if not cfg.hidden or any(h < 1 for h in cfg.hidden):
        errors.append(f"hidden must be a non-empty list of positive sizes, got {cfg.hidden}")
    if len(cfg.weight_decay) != len(cfg.hidden) + 1:
        errors.append(
            f"weight_decay needs one entry per layer (len(hidden) + 1 = {len(cfg.hidden) + 1}), "
            f"got {len(cfg.weight_decay)}"
        )
    return errors


def _validate(cfg: Any) -> None:
    errors = ensemble_shape_errors(cfg)
    if len(cfg.logvar_init) != 2:
        errors.append(f"logvar_init must be [max, min], got {cfg.logvar_init}")
    if not 0.0 <= cfg.holdout < 1.0:
        errors.append(f"holdout must be in [0, 1), got {cfg.holdout}")
    if cfg.batch_size < 1 or cfg.patience < 1 or cfg.max_epochs < 0:
        errors.append("batch_size and patience must be >= 1 and max_epochs >= 0 (0 = no cap)")
    if cfg.mixture_logprob not in MIXTURES:
        errors.append(f"mixture_logprob must be one of {', '.join(MIXTURES)}, got {cfg.mixture_logprob!r}")
    if errors:
        raise ValueError("invalid gaussian_ensemble config: " + "; ".join(errors))


def _adam_kwargs(device: torch.device) -> dict[str, Any]:
    """Fused Adam where torch supports it on this device (fewer kernel launches); foreach otherwise."""
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    if device.type == "cuda" or (device.type == "cpu" and (major, minor) >= (2, 4)):  # CPU fused Adam: torch 2.4+
        return {"fused": True}
    return {"foreach": True}


class _PlainFitProgress:
    """The fit's progress off a terminal (a file, a pipe): a flushed line at the start, at least every minute, and at
    the end, instead of a live bar that a file would only see when it is gone (issue 12, item 1)."""

    EVERY_S = 60.0

    def __init__(self) -> None:
        self.start = self.last = time.time()
        self.description = ""
        self._print("fitting dynamics: started")

    def _print(self, text: str) -> None:
        elapsed = int(time.time() - self.start)
        print(f"{text} (elapsed {elapsed // 60}:{elapsed % 60:02d})", file=sys.stdout, flush=True)

    def add_task(self, description: str, total: Any = None) -> int:
        return 0

    def update(self, task: int, advance: int = 1, description: str = "") -> None:
        self.description = description
        if time.time() - self.last >= self.EVERY_S:
            self.last = time.time()
            self._print(f"fitting dynamics: {description}")

    def stop(self) -> None:
        self._print(f"fitting dynamics: done, {self.description}")


def _progress_bar() -> Any:
    if not sys.stdout.isatty():
        return _PlainFitProgress()
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), transient=False)
    bar.start()
    return bar
