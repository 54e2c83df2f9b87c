"""Observation normalization (``data.normalize_obs``; dynamics.md §2).

With normalization on, every observation the model, the learner and the rollouts see is
z = (s − m)/(sd + 1e-3), with m and sd the dataset statistics over ``observations``. Termination
functions un-normalize first; evaluation normalizes raw env observations before the actor.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from zoo.data.transitions import Transitions

EPS = 1e-3


class ObsNormalizer:
    """Identity when disabled; otherwise (s − mean)/(std + 1e-3)."""

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        self.enabled = mean is not None
        self.mean = mean
        self.std = std

    @classmethod
    def from_data(cls, data: Transitions, enabled: bool) -> ObsNormalizer:
        if not enabled:
            return cls()
        mean, std = data.obs_stats()
        return cls(mean, std)

    def to(self, device: torch.device | str) -> ObsNormalizer:
        if not self.enabled:
            return self
        return ObsNormalizer(self.mean.to(device), self.std.to(device))  # type: ignore[union-attr]

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        return (obs - self.mean.to(obs.device)) / (self.std.to(obs.device) + EPS)  # type: ignore[union-attr]

    def unnormalize(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return obs
        return obs * (self.std.to(obs.device) + EPS) + self.mean.to(obs.device)  # type: ignore[union-attr]

    def apply(self, data: Transitions) -> Transitions:
        """The dataset with obs and next_obs normalized (the same object when disabled)."""
        if not self.enabled:
            return data
        return Transitions(
            obs=self.normalize(data.obs),
            act=data.act,
            reward=data.reward,
            next_obs=self.normalize(data.next_obs),
            terminal=data.terminal,
            timeout=data.timeout,
            meta=dict(data.meta),
        )

    def wrap_termination(
        self, fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """A termination function in the model's (possibly normalized) space."""
        if not self.enabled:
            return fn

        def normalized_termination(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
            return fn(self.unnormalize(obs), act, self.unnormalize(next_obs))

        return normalized_termination

    def state_dict(self) -> dict[str, torch.Tensor]:
        if not self.enabled:
            return {}
        return {"mean": self.mean.cpu(), "std": self.std.cpu()}  # type: ignore[union-attr]

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ObsNormalizer:
        if not state:
            return cls()
        return cls(state["mean"], state["std"])
