"""Vectorised ensemble linear layer (dynamics.md §4).

One layer holds the weights of E independent members, ``weight`` [E, in, out] and ``bias`` [E, 1, out], and
runs them as a single batched matmul (``torch.baddbmm``), never as a Python loop over members. The same
layer serves the critic ensembles of the learners through ``init="linear"``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INITS = ("dynamics", "linear")



class EnsembleLinear(nn.Module):
    """E parallel affine maps ``out[e] = x[e] @ W[e] + b[e]`` (dynamics.md §4).

    Input ``[B, in]`` (the same rows for every member) or ``[E, B, in]`` (one batch per member); output
    ``[E, B, out]``. ``init="dynamics"``: W ~ N(0, (1/(2√in))²) via ``trunc_normal_`` with torch's default
    absolute cut-offs ±2, zero bias [OLK]. ``init="linear"``: every member initialised like ``nn.Linear``
    (Kaiming-uniform weights, i.e. U(±1/√in), and bias U(±1/√in)).

    Early-stopping snapshots live in non-trainable buffers: ``save(idx)`` copies members into them,
    ``restore()`` copies all of them back (dynamics.md §4, §14 #4).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        ensemble: int,
        weight_decay: float = 0.0,
        init: str = "dynamics",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
        if ensemble < 1 or in_features < 1 or out_features < 1:
            raise ValueError(
                f"EnsembleLinear needs positive sizes, got ensemble={ensemble}, in={in_features}, out={out_features}"
            )
        factory = {"device": device, "dtype": dtype}
        self.in_features = in_features
        self.out_features = out_features
        self.ensemble = ensemble
        self.weight_decay = float(weight_decay)
        self.init = init
        self.weight = nn.Parameter(torch.empty(ensemble, in_features, out_features, **factory))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, out_features, **factory))
        self.register_buffer("saved_weight", torch.empty(ensemble, in_features, out_features, **factory))
        self.register_buffer("saved_bias", torch.empty(ensemble, 1, out_features, **factory))
        self.reset_parameters(generator)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Initialise weights and bias by the ``init`` rule; the snapshots take the fresh values."""
        self.reset_members(0, self.ensemble, generator)

    @torch.no_grad()
    def reset_members(self, start: int, stop: int, generator: torch.Generator | None = None) -> None:
        """Initialise members [start, stop) from ``generator``: weights first, then biases, as
        :meth:`reset_parameters` does for all members. A population (zoo.engine.population) initialises each
        run's slice from that run's own generator, so that member k starts where the single run of its seed
        starts."""
        weight, bias = self.weight[start:stop], self.bias[start:stop]
        if self.init == "dynamics":
            std = 1.0 / (2.0 * math.sqrt(self.in_features))
            nn.init.trunc_normal_(weight, std=std, generator=generator)  # default cut-offs a=-2, b=2
            bias.zero_()
        else:
            bound = 1.0 / math.sqrt(self.in_features)
            weight.uniform_(-bound, bound, generator=generator)
            bias.uniform_(-bound, bound, generator=generator)
        self.saved_weight[start:stop].copy_(weight)
        self.saved_bias[start:stop].copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in] or [E, B, in] -> [E, B, out], one ``baddbmm``."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.ensemble, -1, -1)
        elif x.dim() != 3 or x.shape[0] != self.ensemble:
            raise ValueError(
                f"EnsembleLinear expects [B, {self.in_features}] or [{self.ensemble}, B, {self.in_features}], "
                f"got {tuple(x.shape)}"
            )
        return torch.baddbmm(self.bias, x, self.weight)

    def forward_members(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Members [start, stop) only: [B, in] or [stop - start, B, in] -> [stop - start, B, out]. The weights are
        views of the full tensors, so gradients reach exactly those members' slices."""
        n = stop - start
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(n, -1, -1)
        return torch.baddbmm(self.bias[start:stop], x, self.weight[start:stop])

    def decay_loss(self) -> torch.Tensor:
        """wd · ½ · Σ_e ‖W[e]‖²_F, weights only (dynamics.md §4)."""
        return self.weight_decay * 0.5 * self.weight.pow(2).sum()

    @torch.no_grad()
    def save(self, idx: torch.Tensor | int | list[int] | None = None) -> None:
        """Snapshot members ``idx`` (all when None; a bool mask [E] or indices) into the buffers."""
        if idx is None:
            self.saved_weight.copy_(self.weight)
            self.saved_bias.copy_(self.bias)
            return
        idx = torch.as_tensor(idx, device=self.weight.device)
        if idx.dtype == torch.bool:  # a mask: no host sync, a where over the member axis
            mask = idx.view(-1, 1, 1)
            self.saved_weight.copy_(torch.where(mask, self.weight, self.saved_weight))
            self.saved_bias.copy_(torch.where(mask, self.bias, self.saved_bias))
        else:
            idx = idx.long().reshape(-1)
            self.saved_weight[idx] = self.weight[idx]
            self.saved_bias[idx] = self.bias[idx]

    @torch.no_grad()
    def restore(self) -> None:
        """Copy every member's snapshot back into the live weights."""
        self.weight.copy_(self.saved_weight)
        self.bias.copy_(self.saved_bias)

    def extra_repr(self) -> str:
        return (
            f"ensemble={self.ensemble}, in_features={self.in_features}, out_features={self.out_features}, "
            f"weight_decay={self.weight_decay}, init={self.init!r}"
        )

