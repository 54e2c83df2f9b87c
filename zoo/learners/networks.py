"""Networks of the SAC learner: the tanh-Gaussian actor and the batched critic ensemble (sac.md §1).

The N critics are one module of :class:`~zoo.dynamics.layers.EnsembleLinear` layers (weights with a leading
critic axis, ``init="linear"`` = each member like ``nn.Linear``, sac.md §1 [REC]; ``init="dynamics"`` = OLK's
``EnsembleCritic``, sac.md §6 #7). A forward pass is one batched matmul per layer over the critic axis
(DESIGN.md, "Performance rules"), never a Python loop over critics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from zoo.dynamics.layers import EnsembleLinear

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
TANH_EPS = 1e-6  # the constant inside log(a_max (1 - tanh²u) + eps), sac.md §1


def squash_correction(u: torch.Tensor, act_scale: float) -> torch.Tensor:
    """Σ_i log(a_max (1 − tanh² u_i) + 1e-6), [*lead, 1]: the log-Jacobian of a = a_max · tanh(u) (sac.md §1)."""
    t = torch.tanh(u)
    return torch.log(act_scale * (1.0 - t * t) + TANH_EPS).sum(-1, keepdim=True)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int) -> nn.Sequential:
    """Linear layers with ReLU between them: in → hidden… → out."""
    layers: list[nn.Module] = []
    last = in_dim
    for h in hidden:
        layers += [nn.Linear(last, h), nn.ReLU()]
        last = h
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


class CriticEnsemble(nn.Module):
    """N Q-networks (d_s + d_a) → hidden → 1 with ReLU, input concat(s, a), as one batched module (sac.md §1)."""

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: Sequence[int], num_critics: int, init: str = "linear"
    ) -> None:
        super().__init__()
        self.num_critics = num_critics
        sizes = [obs_dim + act_dim, *hidden, 1]
        if init not in ("linear", "dynamics"):
            raise ValueError(f"unknown critic_init {init!r}; choose 'linear' or 'dynamics'")
        self.layers = nn.ModuleList(
            EnsembleLinear(i, o, num_critics, init=init) for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Q-values [N, *lead, 1] for obs [*lead, d_s] and act [*lead, d_a] (any leading batch shape)."""
        lead = obs.shape[:-1]
        x = torch.cat([obs, act], dim=-1)
        if x.dim() != 2:
            x = x.reshape(-1, x.shape[-1])
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
        return x.view(self.num_critics, *lead, 1)


class TanhGaussianActor(nn.Module):
    """Tanh-Gaussian policy with state-dependent std (sac.md §1).

    Trunk MLP with ReLU after every hidden layer, two linear heads: an unbounded mean μ(s) and
    log σ(s) = clamp(head(s), log_std_min, log_std_max). Action a = a_max · tanh(u), u = μ + σ ⊙ ξ.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        act_scale: float = 1.0,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        last = obs_dim
        for h in hidden:
            layers += [nn.Linear(last, h), nn.ReLU()]
            last = h
        self.trunk = nn.Sequential(*layers)
        self.mu = nn.Linear(last, act_dim)
        self.log_std = nn.Linear(last, act_dim)
        self.act_dim = act_dim
        self.act_scale = float(act_scale)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ), each [*lead, d_a]."""
        h = self.trunk(obs)
        return self.mu(h), self.log_std(h).clamp(self.log_std_min, self.log_std_max)

    def squash_correction(self, u: torch.Tensor) -> torch.Tensor:
        """Σ_i log(a_max (1 − tanh² u_i) + 1e-6), [*lead, 1] (sac.md §1)."""
        return squash_correction(u, self.act_scale)

    def sample(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, u, log π(a|s) [*lead, 1]); reparameterised, so differentiable in the actor's parameters."""
        mu, log_std = self(obs)
        if deterministic:
            u = mu
            noise_term = torch.zeros_like(mu)
        else:
            xi = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
            u = mu + log_std.exp() * xi
            noise_term = 0.5 * xi * xi
        normal_logp = -(noise_term + log_std + _LOG_SQRT_2PI).sum(-1, keepdim=True)
        logp = normal_logp - self.squash_correction(u)
        return self.act_scale * torch.tanh(u), u, logp

    def log_prob(self, obs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """log π(a_max tanh(u) | s) for a stored pre-tanh action u, [*lead, 1] (sac.md §1)."""
        mu, log_std = self(obs)
        xi = (u - mu) * torch.exp(-log_std)
        normal_logp = -(0.5 * xi * xi + log_std + _LOG_SQRT_2PI).sum(-1, keepdim=True)
        return normal_logp - self.squash_correction(u)

    def pre_tanh(self, action: torch.Tensor) -> torch.Tensor:
        """u = atanh(a / a_max), with 1 ± a/a_max clamped at 1e-6 before the log (sac.md §1)."""
        x = action / self.act_scale
        return 0.5 * (torch.log((1.0 + x).clamp_min(TANH_EPS)) - torch.log((1.0 - x).clamp_min(TANH_EPS)))


class TanhDeterministicActor(nn.Module):
    """Deterministic policy a = a_max · tanh(μ(s)) (TD3, TD3+BC), with a fixed-width Gaussian for acting.

    The acting (exploration) policy is u = μ(s) + σ ξ, a = a_max · tanh(u), with a fixed σ: a proper density, so
    ``log_prob`` is defined and differentiable in the actor's parameters through μ (the Learner protocol).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int], act_scale: float, noise_std: float) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, act_dim)
        self.act_dim = act_dim
        self.act_scale = float(act_scale)
        self.log_std = math.log(max(noise_std, 1e-6))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action a_max · tanh(μ(s)), [*lead, d_a]."""
        return self.act_scale * torch.tanh(self.net(obs))

    def sample(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, u, log π(a|s) [*lead, 1]) of the acting policy (the deterministic one when asked)."""
        mu = self.net(obs)
        if deterministic:
            u, noise_term = mu, torch.zeros_like(mu)
        else:
            xi = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
            u, noise_term = mu + math.exp(self.log_std) * xi, 0.5 * xi * xi
        logp = -(noise_term + self.log_std + _LOG_SQRT_2PI).sum(-1, keepdim=True) - squash_correction(u, self.act_scale)
        return self.act_scale * torch.tanh(u), u, logp

    def log_prob(self, obs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """log π(a_max tanh(u) | s) of the acting policy for a stored pre-tanh action u, [*lead, 1]."""
        xi = (u - self.net(obs)) * math.exp(-self.log_std)
        normal_logp = -(0.5 * xi * xi + self.log_std + _LOG_SQRT_2PI).sum(-1, keepdim=True)
        return normal_logp - squash_correction(u, self.act_scale)
