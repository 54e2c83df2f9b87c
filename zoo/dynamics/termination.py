"""Termination functions for model rollouts (dynamics.md §10).

Every function maps ``(obs, act, next_obs)`` -> done [B, 1] float32 (1 = done), tests only the predicted next
observation in raw (un-normalised) units, and counts any non-finite value as done. Tasks are matched through
the explicit dict :data:`TERMINATIONS`; an unknown name is an error listing the valid ones (§14 #5).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _done(healthy: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """done = ¬(healthy ∧ all finite), as [B, 1] float32."""
    healthy = healthy & torch.isfinite(next_obs).all(dim=-1)
    return (~healthy).to(torch.float32).unsqueeze(-1)


def _within(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return (x > low) & (x < high)


def _hopper(next_obs: torch.Tensor, offset: int, hopper_mbpo_quirk: bool) -> torch.Tensor:
    z, angle, rest = next_obs[:, offset], next_obs[:, offset + 1], next_obs[:, offset + 1 :]
    # MBPO/OLK apply abs to the boolean, which leaves only the upper bound (§10, §14 #5).
    bounded = (rest < 100).all(-1) if hopper_mbpo_quirk else (rest.abs() < 100).all(-1)
    return _done(bounded & (z > 0.7) & (angle.abs() < 0.2), next_obs)


def hopper(
    obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, hopper_mbpo_quirk: bool = False
) -> torch.Tensor:
    """Hopper, D4RL/v4 layout (11): z = s'_0 > 0.7, |s'_1| < 0.2, |s'_i| < 100 for i ≥ 1."""
    return _hopper(next_obs, 0, hopper_mbpo_quirk)


def hopper_neorl(
    obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor, hopper_mbpo_quirk: bool = False
) -> torch.Tensor:
    """Hopper, NeoRL layout (x first, 12): z = s'_1 > 0.7, |s'_2| < 0.2, |s'_i| < 100 for i ≥ 2."""
    return _hopper(next_obs, 1, hopper_mbpo_quirk)


def _walker(next_obs: torch.Tensor, offset: int) -> torch.Tensor:
    z, angle = next_obs[:, offset], next_obs[:, offset + 1]
    bounded = _within(next_obs[:, offset:], -100.0, 100.0).all(-1)  # MBPO convention, not in the env
    return _done(bounded & _within(z, 0.8, 2.0) & _within(angle, -1.0, 1.0), next_obs)


def walker2d(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Walker2d, D4RL/v4 layout (17): 0.8 < s'_0 < 2, −1 < s'_1 < 1, −100 < s'_i < 100."""
    return _walker(next_obs, 0)


def walker2d_neorl(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Walker2d, NeoRL layout (x first, 18): 0.8 < s'_1 < 2, −1 < s'_2 < 1, −100 < s'_i < 100 for i ≥ 1."""
    return _walker(next_obs, 1)


def halfcheetah(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """HalfCheetah (D4RL): only model blow-ups, −100 < s'_i < 100 (the real env never terminates)."""
    return _done(_within(next_obs, -100.0, 100.0).all(-1), next_obs)


def never(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Never done (Pendulum, NeoRL HalfCheetah, point/door tasks), except on non-finite predictions."""
    return _done(torch.ones(next_obs.shape[0], dtype=torch.bool, device=next_obs.device), next_obs)


def ant(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Ant (any layout with the torso z first): 0.2 ≤ s'_0 ≤ 1.0."""
    z = next_obs[:, 0]
    return _done((z >= 0.2) & (z <= 1.0), next_obs)


def humanoid(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Humanoid: 1.0 ≤ s'_0 ≤ 2.0."""
    z = next_obs[:, 0]
    return _done((z >= 1.0) & (z <= 2.0), next_obs)


def inverted_pendulum(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """InvertedPendulum (4): |s'_1| ≤ 0.2."""
    return _done(next_obs[:, 1].abs() <= 0.2, next_obs)


def inverted_double_pendulum(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """InvertedDoublePendulum: tip height 0.6·cosθ₁ + 0.6·cos(θ₁+θ₂) > 1.

    The angles come from s' = [x, sinθ₁, sinθ₂, cosθ₁, cosθ₂, …] (v4: 11 dims; v5: 9 with the same first five).
    """
    s1, s2, c1, c2 = next_obs[:, 1], next_obs[:, 2], next_obs[:, 3], next_obs[:, 4]
    y_tip = 0.6 * c1 + 0.6 * (c1 * c2 - s1 * s2)
    return _done(y_tip > 1.0, next_obs)


TERMINATIONS: dict[str, TerminationFn] = {
    "hopper": hopper,
    "walker2d": walker2d,
    "halfcheetah": halfcheetah,
    "ant": ant,
    "humanoid": humanoid,
    "inverted_pendulum": inverted_pendulum,
    "inverted_double_pendulum": inverted_double_pendulum,
    "hopper_neorl": hopper_neorl,
    "walker2d_neorl": walker2d_neorl,
    "halfcheetah_neorl": never,
    "never": never,
}


def get_termination(name: str, hopper_mbpo_quirk: bool = False) -> TerminationFn:
    """The termination function registered as ``name``; ``hopper_mbpo_quirk`` applies to the hopper ones."""
    if name not in TERMINATIONS:
        raise KeyError(f"unknown termination function {name!r}; known: {', '.join(sorted(TERMINATIONS))}")
    fn = TERMINATIONS[name]
    if hopper_mbpo_quirk and name in ("hopper", "hopper_neorl"):
        return functools.partial(fn, hopper_mbpo_quirk=True)
    return fn


def normalized(fn: TerminationFn, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-3) -> TerminationFn:
    """Wrap ``fn`` for normalised observations: s = z·(sd + eps) + m for obs and next_obs (dynamics.md §2)."""
    scale = std + eps

    def wrapped(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        m = mean.to(obs.device, obs.dtype)
        s = scale.to(obs.device, obs.dtype)
        return fn(obs * s + m, act, next_obs * s + m)

    wrapped.__name__ = f"normalized_{getattr(fn, '__name__', 'termination')}"
    wrapped.__doc__ = f"{fn.__doc__ or ''} (applied to un-normalised observations)"
    return wrapped
