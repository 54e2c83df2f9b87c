"""Device-resident, preallocated FIFO ring buffer for model transitions (dynamics.md §12.3).

All writes and samples are tensor operations on the buffer's device; nothing goes through numpy and
nothing reads a value back to the host, so the buffer never forces a synchronization.
"""

from __future__ import annotations

import torch

FIELDS = ("obs", "act", "reward", "next_obs", "terminal")


def field_widths(obs_dim: int, act_dim: int) -> dict[str, int]:
    """Columns of each stored field."""
    return {"obs": obs_dim, "act": act_dim, "reward": 1, "next_obs": obs_dim, "terminal": 1}


class RingBuffer:
    """FIFO ring of transitions with a fixed capacity; the oldest rows are overwritten first."""

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        device: torch.device | str,
        storage: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """``storage`` (one [capacity, width] tensor per field) lets a population's stacked buffer hand each run a
        view of its own rows (zoo.engine.population.PopulationBuffer)."""
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device)
        self.storage = storage if storage is not None else {
            k: torch.zeros(self.capacity, w, device=self.device) for k, w in field_widths(obs_dim, act_dim).items()
        }
        self.ptr = 0  # next write position (host int: known without reading the device)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, **rows: torch.Tensor) -> None:
        """Append a block of rows (each field [n, ·]); a block larger than the buffer keeps its tail."""
        n = rows["obs"].shape[0]
        if n == 0:
            return
        if n > self.capacity:
            rows = {k: v[-self.capacity :] for k, v in rows.items()}
            n = self.capacity
        end = self.ptr + n
        first = min(n, self.capacity - self.ptr)
        for k in FIELDS:
            src = rows[k].to(self.device, torch.float32)
            if src.dim() == 1:
                src = src.unsqueeze(-1)
            self.storage[k][self.ptr : self.ptr + first] = src[:first]
            if first < n:
                self.storage[k][: n - first] = src[first:]
        self.ptr = end % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``n`` rows uniformly with replacement."""
        idx = self.sample_index(n, generator)
        return {k: v[idx] for k, v in self.storage.items()}

    def sample_index(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` row indices uniformly with replacement (the draw :meth:`sample` makes)."""
        if self.size == 0:
            raise RuntimeError("sampling from an empty model buffer (no rollout has been stored yet)")
        return torch.randint(self.size, (n,), device=self.device, generator=generator)

    def state_dict(self) -> dict[str, object]:
        """The stored rows, copied: ``torch.save`` writes a view's whole storage, which would be the buffer's full
        capacity (and in a population every run's buffer) instead of the rows it holds."""
        rows = {k: v[: self.size].to("cpu", copy=True) for k, v in self.storage.items()}
        return {"ptr": self.ptr, "size": self.size, **rows}

    def load_state_dict(self, state: dict[str, object]) -> None:
        size = int(state["size"])  # type: ignore[arg-type]
        for k in FIELDS:
            self.storage[k][:size] = state[k].to(self.device)  # type: ignore[union-attr]
        self.size, self.ptr = size, int(state["ptr"]) % self.capacity  # type: ignore[arg-type]
