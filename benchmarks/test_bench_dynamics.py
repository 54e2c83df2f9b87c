"""Speed of the Gaussian ensemble (dynamics.md): one training epoch and one model step, side by side.

Sizes: obs 11, act 3 (hopper), 7 members of 4×200 Swish, batch 256; an epoch over 100,000 transitions
(99,000 after the 1000-row holdout, 387 minibatches), a ``step`` on 50,000 rows (one rollout step of MOPO).

``olk_style`` is a loop written here in the manner of OfflineRL-Kit's ensemble (numpy holdout/bootstrap
indices, a host->device copy of every minibatch, einsum layers, ``loss.item()`` after every minibatch, a numpy
round trip in ``step``), so that the ratio measures what our structure saves on the same hardware; it is not
OfflineRL-Kit itself. The arithmetic (the GEMMs) is the same in both, so on a CPU most of the epoch is the
matmuls and the ratio is modest; the gap grows with the per-call overhead (GPU, small batches).

Run: ``python -m pytest benchmarks/test_bench_dynamics.py --benchmark-only``. ``ZOO_BENCH_THREADS=n`` pins torch's
thread count (on a machine whose cores are shared with other jobs, one thread avoids OpenMP oversubscription,
which can slow the small per-minibatch GEMMs by an order of magnitude).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoo.data.transitions import Transitions
from zoo.dynamics import GaussianEnsemble
from zoo.protocols import EnvSpec

OBS, ACT, ROWS, STEP_ROWS = 11, 3, 100_000, 50_000


def synthetic(n: int = ROWS, seed: int = 0) -> Transitions:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, OBS, generator=g)
    act = torch.rand(n, ACT, generator=g) * 2 - 1
    next_obs = obs + 0.05 * torch.randn(n, OBS, generator=g)
    reward = torch.randn(n, 1, generator=g)
    zeros = torch.zeros(n, 1)
    return Transitions(obs=obs, act=act, reward=reward, next_obs=next_obs, terminal=zeros, timeout=zeros)


@pytest.fixture(scope="module", autouse=True)
def threads():
    before = torch.get_num_threads()
    if os.environ.get("ZOO_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["ZOO_BENCH_THREADS"]))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data() -> Transitions:
    return synthetic()


def ours(**cfg) -> GaussianEnsemble:
    torch.manual_seed(0)
    return GaussianEnsemble(GaussianEnsemble.Config(**cfg), EnvSpec(OBS, ACT), "cpu")


# -- the comparison loop ------------------------------------------------------------------------------
class _OLKStyleEnsemble(nn.Module):
    """Same network and loss, driven the way OfflineRL-Kit drives it (see the module docstring)."""

    def __init__(self, in_dim: int, out_dim: int, e: int = 7, hidden: int = 200) -> None:
        super().__init__()
        sizes = [in_dim, hidden, hidden, hidden, hidden, 2 * out_dim]
        self.weights = nn.ParameterList(
            nn.Parameter(torch.randn(e, i, o) / (2 * math.sqrt(i))) for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(e, 1, o)) for o in sizes[1:])
        self.decays = [2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4]
        self.max_logvar = nn.Parameter(torch.full((out_dim,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((out_dim,), -10.0))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.einsum("ij,bjk->bik", x, w) if x.dim() == 2 else torch.einsum("bij,bjk->bik", x, w)
            x = x + b
            if i < len(self.weights) - 1:
                x = x * torch.sigmoid(x)
        mean, raw = x[..., : self.out_dim], x[..., self.out_dim :]
        lv = self.max_logvar - F.softplus(self.max_logvar - raw)
        return mean, self.min_logvar + F.softplus(lv - self.min_logvar)


def olk_style_epoch(model: _OLKStyleEnsemble, data: Transitions, rng: np.random.Generator) -> float:
    obs, act = data.obs.numpy(), data.act.numpy()
    inputs = np.concatenate([obs, act], 1)
    targets = np.concatenate([data.next_obs.numpy() - obs, data.reward.numpy()], 1)
    perm = rng.permutation(len(inputs))
    hold, train = perm[:1000], perm[1000:]
    mu, sd = inputs[train].mean(0), inputs[train].std(0)
    sd[sd < 1e-12] = 1.0
    x_tr, y_tr = (inputs[train] - mu) / sd, targets[train]
    x_ho, y_ho = (inputs[hold] - mu) / sd, targets[hold]
    idx = rng.integers(len(train), size=(7, len(train)))
    idx = idx[np.arange(7)[:, None], np.argsort(rng.random(idx.shape), axis=-1)]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for j in range(math.ceil(len(train) / 256)):
        b = idx[:, j * 256 : (j + 1) * 256]
        xb = torch.as_tensor(x_tr[b], dtype=torch.float32)
        yb = torch.as_tensor(y_tr[b], dtype=torch.float32)
        mean, logvar = model(xb)
        loss = ((mean - yb).pow(2) * torch.exp(-logvar) + logvar).mean(dim=(1, 2)).sum()
        loss = loss + sum(d * 0.5 * w.pow(2).sum() for d, w in zip(model.decays, model.weights, strict=True))
        loss = loss + 0.01 * (model.max_logvar.sum() - model.min_logvar.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        mean, _ = model(torch.as_tensor(x_ho, dtype=torch.float32))
        holdout = ((mean - torch.as_tensor(y_ho)) ** 2).mean(dim=(1, 2)).cpu().numpy()
    return float(np.sort(holdout)[:5].mean())


def olk_style_step(model: _OLKStyleEnsemble, obs: np.ndarray, act: np.ndarray, rng: np.random.Generator):
    x = np.concatenate([obs, act], 1)
    with torch.no_grad():
        mean, logvar = model(torch.as_tensor(x, dtype=torch.float32))
    mean, logvar = mean.cpu().numpy(), logvar.cpu().numpy()
    mean[..., :-1] += obs
    samples = mean + rng.normal(size=mean.shape) * np.sqrt(np.exp(logvar))
    members = rng.choice(np.arange(5), size=len(obs))
    chosen = samples[members, np.arange(len(obs))]
    return chosen[:, :-1], chosen[:, -1:]


# -- benchmarks ---------------------------------------------------------------------------------------
@pytest.mark.benchmark(group="dynamics-epoch")
def test_epoch_ours(benchmark, data: Transitions) -> None:
    model = ours(max_epochs=1)
    gen = torch.Generator().manual_seed(0)
    report = benchmark.pedantic(model.fit, args=(data, gen), rounds=1, iterations=1, warmup_rounds=0)
    assert report.epochs == 1 and math.isfinite(report.holdout_loss)


@pytest.mark.benchmark(group="dynamics-epoch")
def test_epoch_olk_style(benchmark, data: Transitions) -> None:
    torch.manual_seed(0)
    model = _OLKStyleEnsemble(OBS + ACT, OBS + 1)
    rng = np.random.default_rng(0)
    loss = benchmark.pedantic(olk_style_epoch, args=(model, data, rng), rounds=1, iterations=1, warmup_rounds=0)
    assert math.isfinite(loss)


@pytest.mark.benchmark(group="dynamics-step")
def test_step_ours(benchmark, data: Transitions) -> None:
    model = ours()
    obs, act = data.obs[:STEP_ROWS], data.act[:STEP_ROWS]
    gen = torch.Generator().manual_seed(0)
    out = benchmark.pedantic(model.step, args=(obs, act, gen), rounds=3, iterations=1, warmup_rounds=1)
    assert out.next_obs.shape == (STEP_ROWS, OBS)


@pytest.mark.benchmark(group="dynamics-step")
def test_step_olk_style(benchmark, data: Transitions) -> None:
    torch.manual_seed(0)
    model = _OLKStyleEnsemble(OBS + ACT, OBS + 1)
    obs, act = data.obs[:STEP_ROWS].numpy(), data.act[:STEP_ROWS].numpy()
    rng = np.random.default_rng(0)
    nxt, _ = benchmark.pedantic(olk_style_step, args=(model, obs, act, rng), rounds=3, iterations=1, warmup_rounds=1)
    assert nxt.shape == (STEP_ROWS, OBS)
