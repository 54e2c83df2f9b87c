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


def _flat(x: torch.Tensor) -> torch.Tensor:
    """[*lead, d] -> [L, d]."""
    return x if x.dim() == 2 else x.reshape(-1, x.shape[-1])


def _affine(layer: EnsembleLinear, x: torch.Tensor, k: int) -> torch.Tensor:
    """Member k of ``layer`` on rows [L, in] -> [L, out] (one addmm on views of the stacked weights)."""
    return torch.addmm(layer.bias[k], x, layer.weight[k])


def member_index(population: int, member: int | None, what: str) -> int:
    """The run a single-run call means: ``member``, or run 0 of a population of one (any other population must
    name it)."""
    if member is not None:
        return member
    if population != 1:
        raise ValueError(f"a population of {population} {what}: name the member")
    return 0


def init_members(
    layers: Sequence[EnsembleLinear], generators: Sequence[torch.Generator | None], per_member: int
) -> None:
    """Initialise each run's slice of stacked layers from that run's generator (layer by layer, weight then
    bias), so that member k of a population starts exactly where the single run of its generator starts."""
    for k, gen in enumerate(generators):
        for layer in layers:
            layer.reset_members(k * per_member, (k + 1) * per_member, gen)


class CriticEnsemble(nn.Module):
    """N Q-networks (d_s + d_a) → hidden → 1 with ReLU, input concat(s, a), as one batched module (sac.md §1).

    With ``population = P`` the module holds P runs' critic sets, P·N networks stacked member-major in one set of
    :class:`EnsembleLinear` layers: :meth:`forward_pop` evaluates all of them in one batched matmul per layer,
    :meth:`forward` one run's N critics (``member``; the only run when P = 1).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        num_critics: int,
        init: str = "linear",
        population: int = 1,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> None:
        super().__init__()
        self.num_critics = num_critics
        self.population = population
        sizes = [obs_dim + act_dim, *hidden, 1]
        if init not in ("linear", "dynamics"):
            raise ValueError(f"unknown critic_init {init!r}; choose 'linear' or 'dynamics'")
        self.layers = nn.ModuleList(
            EnsembleLinear(i, o, population * num_critics, init=init)
            for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        if generators is not None:
            init_members(list(self.layers), generators, num_critics)

    def forward(self, obs: torch.Tensor, act: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """Q-values [N, *lead, 1] of one run's critics for obs [*lead, d_s] and act [*lead, d_a]."""
        member = member_index(self.population, member, "critic sets")
        lead = obs.shape[:-1]
        x = _flat(torch.cat([obs, act], dim=-1))
        lo, hi = member * self.num_critics, (member + 1) * self.num_critics
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer.forward_members(x, lo, hi)
            if i < last:
                x = torch.relu(x)
        return x.view(self.num_critics, *lead, 1)

    def forward_pop(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Q-values [P, N, *lead, 1] of every run's critics for obs [P, *lead, d_s] and act [P, *lead, d_a]."""
        p, n = self.population, self.num_critics
        lead = obs.shape[1:-1]
        x = torch.cat([obs, act], dim=-1).reshape(p, 1, -1, obs.shape[-1] + act.shape[-1])
        x = x.expand(p, n, *x.shape[2:]).reshape(p * n, x.shape[2], x.shape[3])
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
        return x.view(p, n, *lead, 1)


def _gaussian_sample(
    mu: torch.Tensor, log_std: torch.Tensor, act_scale: float, deterministic: bool, noise: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(a, u, log π(a|s)) of the tanh-Gaussian from its mean and log σ and standard-normal noise (sac.md §1)."""
    if deterministic:
        u = mu
        noise_term = torch.zeros_like(mu)
    else:
        assert noise is not None
        u = mu + log_std.exp() * noise
        noise_term = 0.5 * noise * noise
    normal_logp = -(noise_term + log_std + _LOG_SQRT_2PI).sum(-1, keepdim=True)
    logp = normal_logp - squash_correction(u, act_scale)
    return act_scale * torch.tanh(u), u, logp


def member_noise(
    shape: torch.Size | tuple[int, ...], generators: Sequence[torch.Generator | None], like: torch.Tensor
) -> torch.Tensor:
    """Standard-normal noise [P, *shape]: member k's slice drawn from its own generator, exactly the draw its
    single run makes (one ``randn`` of ``shape``)."""
    draws = [torch.randn(shape, dtype=like.dtype, device=like.device, generator=g) for g in generators]
    return draws[0].unsqueeze(0) if len(draws) == 1 else torch.stack(draws)


class TanhGaussianActor(nn.Module):
    """Tanh-Gaussian policy with state-dependent std (sac.md §1).

    Trunk MLP with ReLU after every hidden layer, two linear heads: an unbounded mean μ(s) and
    log σ(s) = clamp(head(s), log_std_min, log_std_max). Action a = a_max · tanh(u), u = μ + σ ⊙ ξ.

    Every layer is an :class:`EnsembleLinear` over the ``population`` axis (one policy per run): ``forward``,
    ``sample`` and ``log_prob`` act as one run's policy (``member``; the only one when P = 1), the ``*_pop``
    methods as all P at once on inputs [P, *lead, ·].
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        act_scale: float = 1.0,
        log_std_min: float = -5.0,
        log_std_max: float = 2.0,
        population: int = 1,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> None:
        super().__init__()
        sizes = [obs_dim, *hidden]
        self.trunk = nn.ModuleList(
            EnsembleLinear(i, o, population, init="linear") for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        last = sizes[-1]
        self.mu = EnsembleLinear(last, act_dim, population, init="linear")
        self.log_std = EnsembleLinear(last, act_dim, population, init="linear")
        if generators is not None:
            init_members([*self.trunk, self.mu, self.log_std], generators, 1)
        self.population = population
        self.act_dim = act_dim
        self.act_scale = float(act_scale)
        self.log_std_min, self.log_std_max = float(log_std_min), float(log_std_max)

    def forward(self, obs: torch.Tensor, member: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ) of one run's policy, each [*lead, d_a]."""
        k = member_index(self.population, member, "policies")
        lead = obs.shape[:-1]
        h = _flat(obs)
        for layer in self.trunk:
            h = torch.relu(_affine(layer, h, k))
        mu = _affine(self.mu, h, k).view(*lead, self.act_dim)
        log_std = _affine(self.log_std, h, k).clamp(self.log_std_min, self.log_std_max).view(*lead, self.act_dim)
        return mu, log_std

    def forward_pop(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ) of every run's policy for obs [P, *lead, d_s], each [P, *lead, d_a]."""
        p = self.population
        shape = (*obs.shape[:-1], self.act_dim)
        h = obs.reshape(p, -1, obs.shape[-1])
        for layer in self.trunk:
            h = torch.relu(layer(h))
        return self.mu(h).view(shape), self.log_std(h).clamp(self.log_std_min, self.log_std_max).view(shape)

    def squash_correction(self, u: torch.Tensor) -> torch.Tensor:
        """Σ_i log(a_max (1 − tanh² u_i) + 1e-6), [*lead, 1] (sac.md §1)."""
        return squash_correction(u, self.act_scale)

    def sample(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        member: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, u, log π(a|s) [*lead, 1]) of one run's policy; reparameterised, so differentiable in its parameters."""
        mu, log_std = self(obs, member)
        noise = None
        if not deterministic:
            noise = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        return _gaussian_sample(mu, log_std, self.act_scale, deterministic, noise)

    def sample_pop(
        self,
        obs: torch.Tensor,
        generators: Sequence[torch.Generator | None],
        deterministic: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`sample` for every run at once, obs [P, *lead, d_s]; run k's noise comes from ``generators[k]``."""
        mu, log_std = self.forward_pop(obs)
        noise = None if deterministic else member_noise(mu.shape[1:], generators, mu)
        return _gaussian_sample(mu, log_std, self.act_scale, deterministic, noise)

    def log_prob(self, obs: torch.Tensor, u: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """log π(a_max tanh(u) | s) for a stored pre-tanh action u, [*lead, 1] (sac.md §1)."""
        mu, log_std = self(obs, member)
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
    ``log_prob`` is defined and differentiable in the actor's parameters through μ (the Learner protocol). Like
    :class:`TanhGaussianActor`, stacked over a ``population`` axis: one run's policy (``member``), or all of them
    (the ``*_pop`` methods, inputs [P, *lead, ·]).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int],
        act_scale: float,
        noise_std: float,
        population: int = 1,
        generators: Sequence[torch.Generator | None] | None = None,
    ) -> None:
        super().__init__()
        sizes = [obs_dim, *hidden, act_dim]
        self.layers = nn.ModuleList(
            EnsembleLinear(i, o, population, init="linear") for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        if generators is not None:
            init_members(list(self.layers), generators, 1)
        self.population = population
        self.act_dim = act_dim
        self.act_scale = float(act_scale)
        self.log_std = math.log(max(noise_std, 1e-6))

    def net(self, obs: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """μ(s) of one run's policy (before the tanh), [*lead, d_a]."""
        member = member_index(self.population, member, "policies")
        lead = obs.shape[:-1]
        h = _flat(obs)
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = _affine(layer, h, member)
            if i < last:
                h = torch.relu(h)
        return h.view(*lead, self.act_dim)

    def net_pop(self, obs: torch.Tensor) -> torch.Tensor:
        """μ(s) of every run's policy for obs [P, *lead, d_s], [P, *lead, d_a]."""
        shape = (*obs.shape[:-1], self.act_dim)
        h = obs.reshape(self.population, -1, obs.shape[-1])
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < last:
                h = torch.relu(h)
        return h.view(shape)

    def forward(self, obs: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """The deterministic action a_max · tanh(μ(s)) of one run, [*lead, d_a]."""
        return self.act_scale * torch.tanh(self.net(obs, member))

    def forward_pop(self, obs: torch.Tensor) -> torch.Tensor:
        """The deterministic action of every run, [P, *lead, d_a]."""
        return self.act_scale * torch.tanh(self.net_pop(obs))

    def sample(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        member: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(a, u, log π(a|s) [*lead, 1]) of the acting policy (the deterministic one when asked)."""
        mu = self.net(obs, member)
        noise = None if deterministic else torch.randn(mu.shape, dtype=mu.dtype, device=mu.device, generator=generator)
        return _gaussian_sample(mu, torch.full_like(mu, self.log_std), self.act_scale, deterministic, noise)

    def log_prob(self, obs: torch.Tensor, u: torch.Tensor, member: int | None = None) -> torch.Tensor:
        """log π(a_max tanh(u) | s) of the acting policy for a stored pre-tanh action u, [*lead, 1]."""
        xi = (u - self.net(obs, member)) * math.exp(-self.log_std)
        normal_logp = -(0.5 * xi * xi + self.log_std + _LOG_SQRT_2PI).sum(-1, keepdim=True)
        return normal_logp - squash_correction(u, self.act_scale)
