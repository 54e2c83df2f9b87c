"""Flat tensor transitions: the one in-memory dataset format of the zoo (DESIGN.md, "Data and tasks").

Rows are transitions (s, a, r, s'). ``terminal`` and ``timeout`` are separate float32 0/1 flags of
shape [N, 1]: a terminal row is done (no bootstrap), a timeout row is an episode cut by a time limit
(never done, but an episode boundary). The last row of a dataset is always an episode boundary: the
loaders mark a trailing partial episode as truncated (``timeout = 1``), evaluation.md §2.4.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

FIELDS = ("obs", "act", "reward", "next_obs", "terminal", "timeout")


@dataclass
class Transitions:
    obs: torch.Tensor  # [N, d_s] float32
    act: torch.Tensor  # [N, d_a] float32
    reward: torch.Tensor  # [N, 1] float32
    next_obs: torch.Tensor  # [N, d_s] float32
    terminal: torch.Tensor  # [N, 1] float32 0/1
    timeout: torch.Tensor  # [N, 1] float32 0/1
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.obs.shape[0]
        for name in FIELDS:
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor):
                t = torch.as_tensor(np.asarray(t))
            if t.dim() == 1:
                t = t.unsqueeze(-1)
            if t.dtype != torch.float32:
                t = t.to(torch.float32)
            if t.shape[0] != n:
                raise ValueError(f"Transitions.{name} has {t.shape[0]} rows, obs has {n}")
            setattr(self, name, t)
        if self.next_obs.shape[1:] != self.obs.shape[1:]:
            raise ValueError(f"next_obs shape {tuple(self.next_obs.shape)} != obs shape {tuple(self.obs.shape)}")
        for flag in ("reward", "terminal", "timeout"):
            if getattr(self, flag).shape[1] != 1:
                raise ValueError(f"Transitions.{flag} must be [N, 1], got {tuple(getattr(self, flag).shape)}")

    # -- basic properties ---------------------------------------------------------------------
    def __len__(self) -> int:
        return self.obs.shape[0]

    @property
    def obs_dim(self) -> int:
        return self.obs.shape[1]

    @property
    def act_dim(self) -> int:
        return self.act.shape[1]

    @property
    def device(self) -> torch.device:
        return self.obs.device

    def tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in FIELDS}

    def to(self, device: torch.device | str) -> Transitions:
        """A copy on ``device`` (the same object when it is already there)."""
        device = torch.device(device)
        if self.obs.device == device:
            return self
        return Transitions(**{k: v.to(device) for k, v in self.tensors().items()}, meta=dict(self.meta))

    def select(self, index: torch.Tensor | slice) -> Transitions:
        """Rows by index or boolean mask."""
        return Transitions(**{k: v[index] for k, v in self.tensors().items()}, meta=dict(self.meta))

    # -- identity ----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """Content hash (sha256 over shapes and bytes of every field, 16 hex digits). Data collected by the zoo
        also hash their collection protocol (``meta["collection_protocol"]``, zoo.data.collect), so data of two
        protocols never share a fingerprint (nor a pretrained model) even where their bytes agree."""
        h = hashlib.sha256()
        if self.meta.get("collection_protocol") is not None:
            h.update(f"collection_protocol={int(self.meta['collection_protocol'])}".encode())
        for name in FIELDS:
            t = getattr(self, name).detach().to("cpu").contiguous()
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()[:16]

    # -- statistics ---------------------------------------------------------------------------
    def obs_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (population) std of ``obs`` over the dataset, each [d_s]."""
        return self.obs.mean(0), self.obs.std(0, unbiased=False)

    def episode_ends(self) -> torch.Tensor:
        """Boolean [N]: rows that end an episode (terminal or timeout; the last row always)."""
        ends = (self.terminal[:, 0] > 0) | (self.timeout[:, 0] > 0)
        if len(self):
            ends[-1] = True
        return ends

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of every episode, in order (float64 on the CPU)."""
        if len(self) == 0:
            return torch.zeros(0, dtype=torch.float64)
        ends = self.episode_ends().cpu()
        episode = torch.cumsum(ends.long(), 0) - ends.long()  # id of the episode each row belongs to
        rewards = self.reward[:, 0].detach().cpu().double()
        return torch.zeros(int(episode[-1]) + 1, dtype=torch.float64).index_add_(0, episode, rewards)

    def summary(self) -> dict[str, Any]:
        returns = self.episode_returns()
        return {
            "transitions": len(self),
            "episodes": int(returns.numel()),
            "terminals": int(self.terminal.sum().item()),
            "timeouts": int(self.timeout.sum().item()),
            "obs_dim": self.obs_dim,
            "act_dim": self.act_dim,
            "return_mean": float(returns.mean()) if returns.numel() else float("nan"),
            "return_std": float(returns.std(unbiased=False)) if returns.numel() else float("nan"),
            "return_min": float(returns.min()) if returns.numel() else float("nan"),
            "return_max": float(returns.max()) if returns.numel() else float("nan"),
            "reward_min": float(self.reward.min().item()) if len(self) else float("nan"),
        }

    # -- sampling -----------------------------------------------------------------------------
    def sample_index(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform row indices with replacement, drawn on the data's device."""
        return torch.randint(len(self), (batch_size,), device=self.device, generator=generator)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Transitions:
        return self.select(self.sample_index(batch_size, generator))

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_numpy(cls, meta: dict[str, Any] | None = None, **arrays: np.ndarray) -> Transitions:
        missing = [f for f in FIELDS if f not in arrays]
        if missing:
            raise ValueError(f"missing arrays: {', '.join(missing)}")
        tensors = {k: torch.from_numpy(np.ascontiguousarray(arrays[k], dtype=np.float32)) for k in FIELDS}
        return cls(**tensors, meta=dict(meta or {}))

    @classmethod
    def concat(cls, parts: list[Transitions]) -> Transitions:
        return cls(
            **{name: torch.cat([getattr(p, name) for p in parts]) for name in FIELDS},
            meta=dict(parts[0].meta) if parts else {},
        )

    def __repr__(self) -> str:
        return (
            f"Transitions(n={len(self)}, obs_dim={self.obs_dim}, act_dim={self.act_dim}, "
            f"terminals={int(self.terminal.sum())}, timeouts={int(self.timeout.sum())}, device={self.device})"
        )

