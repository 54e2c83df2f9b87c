"""Model log-densities of stored samples and their per-sample gradients (rombrl.md §4.4 steps 2–5, §4.5).

ROMBRL scores a stored model sample y = (Δs, r) under a *given* member k: log N(y; μ_k(s,a), σ_k(s,a)) summed over
all D dims (dynamics.md §9). :class:`ModelScores` evaluates that for a batch (differentiable in the model's
parameters) and returns per-sample gradients with respect to the fixed-order parameter list ``model_parameters()``
(all ensemble weights and biases, then the log-variance bounds; no snapshots, no elite index), flattened to [n, p].

Per-sample gradients, three interchangeable modes (the same numbers; ``benchmarks/test_bench_rombrl.py`` times
them side by side):

- ``"structured"`` (default): one batched forward and one backward pass. The parameters of every
  :class:`~zoo.dynamics.layers.EnsembleLinear` layer get their per-sample gradients as outer products
  x_j ⊗ δ_j of the layer's input and output gradient, taken only at the member k_j that scores row j (an
  independent-member ensemble: no other member's weights touch log P_{k_j}); the remaining parameters (the
  log-variance bounds) go through one batched backward (``is_grads_batched``). Models without such layers fall back
  to ``"vmap"``.
- ``"vmap"``: ``torch.func.vmap`` over ``torch.func.grad`` of a ``functional_call`` of the model. Generic, but on
  the CPU torch's batching rule for a batched input times the unbatched [E, in, out] weights copies the weights once
  per sample, and the per-sample [E, in, out] gradients come back transposed; it is no faster than the loop here.
- ``"loop"``: the reference layout (one batched forward, one backward pass per sample, as in the official code).

Measured (``benchmarks/test_bench_rombrl.py``, 80 rows, 7×(4×200) ensemble with 9.0e5 parameters, one CPU thread):
structured 0.28 s, vmap 1.13 s, loop 1.10 s.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from zoo.dynamics.layers import EnsembleLinear
from zoo.rules.rombrl_linalg import flatten

LOG_2PI = math.log(2.0 * math.pi)
SCORE_MODES = ("structured", "vmap", "loop")


def model_parameter_list(model: Any) -> list[torch.Tensor]:
    """The explicit, fixed-order parameter list ∇_φ is taken over (rombrl.md §2)."""
    if hasattr(model, "model_parameters"):
        return list(model.model_parameters())
    return [p for p in model.parameters() if p.requires_grad]


def gaussian_log_prob(y: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Σ_d [−½(y−μ)²e^{−ℓ} − ½ℓ − ½log 2π] over the last dim (dynamics.md §9)."""
    return (-0.5 * (y - mean).pow(2) * torch.exp(-logvar) - 0.5 * logvar - 0.5 * LOG_2PI).sum(-1)


class ModelScores:
    """log P_φ(y | s, a) under one given member per row, and its per-sample gradients in φ."""

    def __init__(self, model: Any, mode: str = "structured") -> None:
        if mode not in SCORE_MODES:
            raise ValueError(f"rule.per_sample_grads must be one of {', '.join(SCORE_MODES)}, got {mode!r}")
        self.model = model
        self.mode = mode
        self.params = model_parameter_list(model)
        by_id = {id(p): name for name, p in model.named_parameters()}
        missing = [i for i, p in enumerate(self.params) if id(p) not in by_id]
        if missing:
            raise ValueError("model_parameters() must return registered parameters of the model")
        self.names = [by_id[id(p)] for p in self.params]
        self.ensemble = self._ensemble_size(model)
        self.offsets: list[int] = []
        offset = 0
        for p in self.params:
            self.offsets.append(offset)
            offset += p.numel()
        index = {id(p): i for i, p in enumerate(self.params)}
        self.layers: list[tuple[EnsembleLinear, int, int]] = [
            (m, index[id(m.weight)], index[id(m.bias)])
            for m in model.modules()
            if isinstance(m, EnsembleLinear) and id(m.weight) in index and id(m.bias) in index
        ]
        in_layers = {i for _, wi, bi in self.layers for i in (wi, bi)}
        self.others = [i for i in range(len(self.params)) if i not in in_layers]
        if self.mode == "structured" and not self.layers:
            self.mode = "vmap"

    @staticmethod
    def _ensemble_size(model: Any) -> int:
        size = getattr(model, "ensemble_size", None)
        if size is None:
            size = model.cfg.ensemble
        return int(size)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def dtype(self) -> torch.dtype:
        return self.params[0].dtype

    def _onehot(self, member: torch.Tensor) -> torch.Tensor:
        """[n, E] one-hot rows of the member index (selection by a product stays vmap-friendly)."""
        return F.one_hot(member.long(), self.ensemble).to(self.dtype)

    def _select(self, mean: torch.Tensor, logvar: torch.Tensor, onehot: torch.Tensor) -> tuple[torch.Tensor, ...]:
        w = onehot.T.unsqueeze(-1)  # [E, n, 1]
        return (w * mean).sum(0), (w * logvar).sum(0)

    def select(self, mean: torch.Tensor, logvar: torch.Tensor, member: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(μ_k, ℓ_k) [n, D] of member k = ``member`` [n] from the per-member [E, n, D] outputs."""
        return self._select(mean, logvar, self._onehot(member))

    def log_prob(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        y: torch.Tensor,
        member: torch.Tensor,
        params: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """[n] log N(y; μ_k, σ_k) with k = ``member`` [n]; differentiable in the live parameters (or ``params``)."""
        if params is None:
            mean, logvar = self.model(obs, act)
        else:
            mean, logvar = functional_call(self.model, dict(zip(self.names, params, strict=True)), (obs, act))
        mu, lv = self._select(mean, logvar, self._onehot(member))
        return gaussian_log_prob(y, mu, lv)

    def per_sample_grads(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        y: torch.Tensor,
        member: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """[n, p] gradients, one row per sample (or per group of samples), flattened in ``params`` order.

        Inputs [n, ·] (``member`` [n]): row j = ∇_φ log P_φ(y_j | s_j, a_j) under member k_j. Inputs [n, r, ·]
        (``member`` [n, r]) with ``weights`` [n, r]: row j = ∇_φ Σ_r w_jr·log P_φ(y_jr | s_jr, a_jr), e.g. the
        per-trajectory sums Σ_t γ^t Â^Q_t g_t of rombrl.md §4.4 step 4 without materialising every g_t.
        """
        grouped = obs.dim() == 3
        if not grouped:
            obs, act, y, member = obs.unsqueeze(1), act.unsqueeze(1), y.unsqueeze(1), member.unsqueeze(1)
        n, r = obs.shape[0], obs.shape[1]
        if weights is None:
            weights = obs.new_ones(n, r)
        if n == 0:
            return obs.new_zeros(0, self.num_params)
        if self.mode == "structured":
            return self._structured(obs, act, y, member, weights)
        if self.mode == "loop":
            with torch.enable_grad():
                lp = self.log_prob(obs.flatten(0, 1), act.flatten(0, 1), y.flatten(0, 1), member.flatten())
                per_group = (lp.view(n, r) * weights).sum(1)
                rows = []
                for j in range(n):
                    g = torch.autograd.grad(per_group[j], self.params, retain_graph=j < n - 1, allow_unused=True)
                    filled = [torch.zeros_like(p) if gj is None else gj for gj, p in zip(g, self.params, strict=True)]
                    rows.append(flatten(filled))
            return torch.stack(rows)
        detached = tuple(p.detach() for p in self.params)
        onehot = self._onehot(member)  # [n, r, E]

        def group(
            params: tuple[torch.Tensor, ...],
            o: torch.Tensor,
            a: torch.Tensor,
            yy: torch.Tensor,
            oh: torch.Tensor,
            w: torch.Tensor,
        ) -> torch.Tensor:
            mean, logvar = functional_call(self.model, dict(zip(self.names, params, strict=True)), (o, a))
            mu, lv = self._select(mean, logvar, oh)
            return (gaussian_log_prob(yy, mu, lv) * w).sum()

        with torch.enable_grad():
            grads = vmap(grad(group), in_dims=(None, 0, 0, 0, 0, 0))(detached, obs, act, y, onehot, weights)
        out = obs.new_empty(n, self.num_params)
        offset = 0
        for g in grads:
            size = g[0].numel()
            out[:, offset : offset + size] = g.reshape(n, size)
            offset += size
        return out

    def _structured(
        self, obs: torch.Tensor, act: torch.Tensor, y: torch.Tensor, member: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """Outer-product per-sample gradients for the ensemble layers, batched autograd for the rest."""
        n, r = obs.shape[0], obs.shape[1]
        rows = n * r
        member = member.reshape(rows).long()
        group = torch.arange(n, device=obs.device).repeat_interleave(r)
        captured: list[tuple[torch.Tensor, torch.Tensor]] = []
        hooks = [
            layer.register_forward_hook(lambda mod, inp, out: captured.append((inp[0], out)))
            for layer, _, _ in self.layers
        ]
        try:
            with torch.enable_grad():
                lp = self.log_prob(obs.reshape(rows, -1), act.reshape(rows, -1), y.reshape(rows, -1), member)
                per_group = (lp.view(n, r) * weights).sum(1)
        finally:
            for h in hooks:
                h.remove()
        if len(captured) != len(self.layers):  # a layer used more than once per forward: no outer-product shortcut
            return ModelScores(self.model, "vmap").per_sample_grads(obs, act, y, member.view(n, r), weights)
        others = [self.params[i] for i in self.others]
        deltas = torch.autograd.grad(
            per_group.sum(), [out for _, out in captured], retain_graph=bool(others), allow_unused=True
        )
        out = obs.new_zeros(n, self.num_params)
        take = torch.arange(rows, device=obs.device)
        for (layer, wi, bi), (x, _), delta in zip(self.layers, captured, deltas, strict=True):
            if delta is None:
                continue
            e, fin, fout = layer.ensemble, layer.in_features, layer.out_features
            xs = (x if x.dim() == 2 else x[member, take]).detach()  # [rows, in]: member k_j's input of row j
            ds = delta[member, take]  # [rows, out]
            w_view = out[:, self.offsets[wi] : self.offsets[wi] + e * fin * fout].view(n, e, fin, fout)
            w_view.index_put_((group, member), xs.unsqueeze(-1) * ds.unsqueeze(-2), accumulate=True)
            b_view = out[:, self.offsets[bi] : self.offsets[bi] + e * fout].view(n, e, fout)
            b_view.index_put_((group, member), ds, accumulate=True)
        if others:
            eye = torch.eye(n, dtype=per_group.dtype, device=per_group.device)
            grads = torch.autograd.grad(per_group, others, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
            for i, g in zip(self.others, grads, strict=True):
                if g is not None:
                    out[:, self.offsets[i] : self.offsets[i] + self.params[i].numel()] = g.reshape(n, -1)
        return out
