"""Exact checks of the Gaussian ensemble (dynamics.md §2–§9) on tiny sizes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import zoo.dynamics.ensemble as ens_mod
from zoo.data.transitions import Transitions
from zoo.dynamics import EnsembleLinear, GaussianEnsemble, holdout_size, permute_rows
from zoo.protocols import Batch, Dynamics, EnvSpec, FitReport, ModelStep
from zoo.registry import ConfigKeyError, create


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run faster on one thread (and do not fight other jobs for the cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {"ensemble": 3, "elites": 2, "hidden": [8, 8], "weight_decay": [1e-4, 2e-4, 3e-4], "batch_size": 32}


def make_model(obs_dim: int = 3, act_dim: int = 2, seed: int = 0, **cfg) -> GaussianEnsemble:
    torch.manual_seed(seed)
    return create("dynamics", "gaussian_ensemble", EnvSpec(obs_dim, act_dim), "cpu", **{**TINY, **cfg})


def random_data(n: int = 200, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> Transitions:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, obs_dim, generator=g)
    act = torch.rand(n, act_dim, generator=g) * 2 - 1
    next_obs = obs + 0.1 * obs.roll(1, dims=1) + 0.2 * torch.randn(n, obs_dim, generator=g)
    reward = obs.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g)
    zeros = torch.zeros(n, 1)
    return Transitions(obs=obs, act=act, reward=reward, next_obs=next_obs, terminal=zeros, timeout=zeros)


def reference_member(model: GaussianEnsemble, e: int) -> nn.Sequential:
    """Member e as an ordinary stack of nn.Linear + SiLU with the same weights."""
    mods: list[nn.Module] = []
    for i, layer in enumerate(model.layers):
        lin = nn.Linear(layer.in_features, layer.out_features)
        with torch.no_grad():
            lin.weight.copy_(layer.weight[e].T)
            lin.bias.copy_(layer.bias[e, 0])
        mods.append(lin)
        if i < len(model.layers) - 1:
            mods.append(nn.SiLU())
    return nn.Sequential(*mods)


# -- §4 layer ----------------------------------------------------------------------------------------
def test_ensemble_linear_equals_separate_linears_both_layouts() -> None:
    torch.manual_seed(0)
    layer = EnsembleLinear(4, 5, ensemble=3)
    with torch.no_grad():
        layer.bias.normal_()
    x_shared = torch.randn(6, 4)
    x_member = torch.randn(3, 6, 4)
    out_shared, out_member = layer(x_shared), layer(x_member)
    assert out_shared.shape == out_member.shape == (3, 6, 5)
    for e in range(3):
        lin = nn.Linear(4, 5)
        with torch.no_grad():
            lin.weight.copy_(layer.weight[e].T)
            lin.bias.copy_(layer.bias[e, 0])
        torch.testing.assert_close(out_shared[e], lin(x_shared))
        torch.testing.assert_close(out_member[e], lin(x_member[e]))
    with pytest.raises(ValueError, match="expects"):
        layer(torch.randn(2, 6, 4))


@pytest.mark.parametrize("out", [1, 3, 24])
def test_ensemble_linear_values_and_gradients_equal_separate_linears(out: int) -> None:
    torch.manual_seed(0)
    layer = EnsembleLinear(7, out, ensemble=3)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 10, 7, requires_grad=True)
    grad_out = torch.randn(3, 10, out)
    y = layer(x)
    y.backward(grad_out)
    for e in range(3):
        w = layer.weight[e].detach().clone().requires_grad_(True)
        b = layer.bias[e, 0].detach().clone().requires_grad_(True)
        xe = x[e].detach().clone().requires_grad_(True)
        ye = xe @ w + b
        ye.backward(grad_out[e])
        torch.testing.assert_close(y[e], ye)
        torch.testing.assert_close(layer.weight.grad[e], w.grad)
        torch.testing.assert_close(layer.bias.grad[e, 0], b.grad)
        torch.testing.assert_close(x.grad[e], xe.grad)
    lo, hi = 1, 3
    torch.testing.assert_close(layer.forward_members(x[lo:hi], lo, hi), y[lo:hi])


def test_ensemble_linear_init_rules() -> None:
    torch.manual_seed(0)
    dyn = EnsembleLinear(400, 300, ensemble=4)
    assert torch.all(dyn.bias == 0)
    assert dyn.weight.std().item() == pytest.approx(1 / (2 * math.sqrt(400)), rel=0.02)
    assert torch.equal(dyn.saved_weight, dyn.weight) and not dyn.saved_weight.requires_grad
    lin = EnsembleLinear(16, 300, ensemble=4, init="linear")
    bound = 1 / math.sqrt(16)
    assert lin.weight.abs().max() <= bound and lin.bias.abs().max() <= bound
    assert lin.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)  # U(±b) has std b/√3
    assert {n for n, _ in lin.named_parameters()} == {"weight", "bias"}
    with pytest.raises(ValueError, match="init"):
        EnsembleLinear(2, 2, 2, init="xavier")


def test_snapshots_save_and_restore() -> None:
    torch.manual_seed(0)
    layer = EnsembleLinear(3, 2, ensemble=3)
    start = layer.weight.detach().clone()
    with torch.no_grad():
        layer.weight.add_(1.0)
        layer.bias.add_(1.0)
    layer.save(torch.tensor([True, False, True]))  # mask form
    with torch.no_grad():
        layer.weight.add_(5.0)
    layer.save([1])  # index form
    layer.restore()
    torch.testing.assert_close(layer.weight[0], start[0] + 1)
    torch.testing.assert_close(layer.weight[1], start[1] + 6)
    torch.testing.assert_close(layer.weight[2], start[2] + 1)
    assert torch.all(layer.bias == 1)  # member 1's bias was saved (at +1) by the index-form save


def test_decay_term() -> None:
    layer = EnsembleLinear(3, 2, ensemble=2, weight_decay=0.5)
    expected = 0.5 * 0.5 * sum((layer.weight[e] ** 2).sum() for e in range(2))
    torch.testing.assert_close(layer.decay_loss(), expected)


# -- §3 architecture --------------------------------------------------------------------------------
def test_parameter_count_walker() -> None:
    model = create("dynamics", "gaussian_ensemble", EnvSpec(17, 6), "cpu")
    assert sum(p.numel() for p in model.model_parameters()) == 928_488
    assert {id(p) for p in model.model_parameters()} == {id(p) for p in model.parameters()}
    assert len(model.model_parameters()) == 2 * 5 + 2
    assert model.elites.dtype == torch.long and model.elites.shape == (5,)
    assert isinstance(model, Dynamics)


def test_config_validation_and_unknown_keys() -> None:
    with pytest.raises(ValueError, match="weight_decay"):
        create("dynamics", "gaussian_ensemble", EnvSpec(3, 2), "cpu", hidden=[8, 8])
    with pytest.raises(ValueError, match="elites"):
        create("dynamics", "gaussian_ensemble", EnvSpec(3, 2), "cpu", ensemble=3, elites=4)
    with pytest.raises(ConfigKeyError, match="valid keys"):
        create("dynamics", "gaussian_ensemble", EnvSpec(3, 2), "cpu", n_members=3)


def test_forward_equals_separate_networks_and_soft_clamp() -> None:
    model = make_model()
    with torch.no_grad():
        model.max_logvar.copy_(torch.linspace(-1, 1, 4))
        model.min_logvar.copy_(torch.linspace(-6, -4, 4))
        model.scaler_mean.copy_(torch.randn(5))
        model.scaler_std.copy_(torch.rand(5) + 0.5)
    obs, act = torch.randn(7, 3), torch.randn(7, 2)
    mean, logvar = model(obs, act)
    assert mean.shape == logvar.shape == (3, 7, 4)
    x = (torch.cat([obs, act], 1) - model.scaler_mean) / model.scaler_std
    for e in range(3):
        out = reference_member(model, e)(x)
        torch.testing.assert_close(mean[e], out[:, :4])
        raw = out[:, 4:]
        hi, lo = model.max_logvar, model.min_logvar
        l1 = hi - torch.log1p(torch.exp(hi - raw))
        torch.testing.assert_close(logvar[e], lo + torch.log1p(torch.exp(l1 - lo)))
    # the clamp keeps ℓ ≥ ℓ_min and ≤ ℓ_max + softplus(ℓ_min − ℓ_max) (the min clamp is applied last), and
    # passes gradients to both bounds
    hi, lo = model.max_logvar.detach(), model.min_logvar.detach()
    clamped = model.soft_clamp(torch.tensor([[-100.0] * 4, [100.0] * 4]))
    torch.testing.assert_close(clamped[0].detach(), lo)
    torch.testing.assert_close(clamped[1].detach(), lo + torch.nn.functional.softplus(hi - lo))
    clamped.sum().backward()
    assert model.max_logvar.grad is not None and model.min_logvar.grad is not None


# -- §5 loss ----------------------------------------------------------------------------------------
def test_loss_matches_hand_computation() -> None:
    model = make_model()
    data = random_data(5)
    w = torch.rand(5, 1)
    batch = Batch(data.obs, data.act, data.reward, data.next_obs, data.terminal, data.terminal)
    mean, logvar = model(data.obs, data.act)
    y = torch.cat([data.next_obs - data.obs, data.reward], 1)
    e_n, b_n, d_n = mean.shape
    nll = 0.0
    weighted = 0.0
    for e in range(e_n):
        for b in range(b_n):
            for d in range(d_n):
                term = (mean[e, b, d] - y[b, d]) ** 2 * torch.exp(-logvar[e, b, d]) + logvar[e, b, d]
                nll += term / (b_n * d_n)
                weighted += w[b, 0] * term / (b_n * d_n)
    decay = sum(
        wd * 0.5 * sum((layer.weight[e] ** 2).sum() for e in range(e_n))
        for wd, layer in zip(TINY["weight_decay"], model.layers, strict=True)
    )
    bound = 0.01 * (model.max_logvar.sum() - model.min_logvar.sum())
    torch.testing.assert_close(model.nll(batch), nll + decay + bound)
    torch.testing.assert_close(model.nll(data, include_regularizers=False), torch.as_tensor(nll).float())
    torch.testing.assert_close(model.nll(data, weights=w, include_regularizers=False), weighted.float())
    bound_small = 0.001 * (model.max_logvar.sum() - model.min_logvar.sum())
    torch.testing.assert_close(model.nll(data, logvar_coef=0.001), nll + decay + bound_small)
    # gradients reach every model parameter
    model.nll(data, weights=w).backward()
    assert all(p.grad is not None for p in model.model_parameters())


def test_nll_per_member_batches() -> None:
    model = make_model()
    data = [random_data(4, seed=s) for s in range(3)]
    stacked = Batch(
        *(torch.stack([getattr(d, k) for d in data]) for k in ("obs", "act", "reward", "next_obs")),
        terminal=torch.zeros(3, 4, 1),
        is_model=torch.zeros(3, 4, 1),
    )
    total = model.nll(stacked, include_regularizers=False)
    parts = []
    for e, d in enumerate(data):
        mean, logvar = model(d.obs, d.act)
        y = torch.cat([d.next_obs - d.obs, d.reward], 1)
        parts.append(((mean[e] - y) ** 2 * torch.exp(-logvar[e]) + logvar[e]).mean())
    torch.testing.assert_close(total, torch.stack(parts).sum())


# -- §6–§7 fitting ----------------------------------------------------------------------------------
def test_holdout_size_rule() -> None:
    assert holdout_size(100_000, 0.2, 1000) == 1000
    assert holdout_size(2000, 0.2, 1000) == 400
    assert holdout_size(2000, 0.1, 1000) == 200
    assert holdout_size(999, 0.2, 1000) == 199  # floor
    assert holdout_size(50_000, 0.2, 0) == 10_000  # 0 = no cap
    model = make_model(max_epochs=1)
    report = model.fit(random_data(200), torch.Generator().manual_seed(0))
    assert report.extra["holdout_size"] == 40 and report.extra["train_size"] == 160


def test_bootstrap_drawn_once_and_permuted(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []

    def recording(index: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        out = permute_rows(index, generator)
        seen.append(out.clone())
        return out

    monkeypatch.setattr(ens_mod, "permute_rows", recording)
    model = make_model(max_epochs=4)
    model.fit(random_data(100), torch.Generator().manual_seed(1))
    assert len(seen) == 4
    first = seen[0]
    assert first.shape == (3, 80)
    assert not torch.equal(first[0], first[1])  # each member has its own bootstrap
    for later in seen[1:]:
        assert not torch.equal(later, first)  # order changes ...
        torch.testing.assert_close(later.sort(1).values, first.sort(1).values)  # ... the multiset does not


def test_permute_rows_keeps_multisets() -> None:
    idx = torch.randint(10, (4, 50), generator=torch.Generator().manual_seed(0))
    out = permute_rows(idx, torch.Generator().manual_seed(1))
    assert torch.equal(out.sort(1).values, idx.sort(1).values) and not torch.equal(out, idx)


def scripted_holdout(monkeypatch: pytest.MonkeyPatch, metrics: list[list[float]], record: list) -> None:
    """Replace the holdout metric by a script; record the live weights at every call."""
    calls = iter(metrics)

    def fake(self: GaussianEnsemble, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        record.append([layer.weight.detach().clone() for layer in self.layers])
        return torch.tensor(next(calls))

    monkeypatch.setattr(GaussianEnsemble, "holdout_mse", fake)


def test_early_stopping_elites_and_snapshot_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = [
        [1.0, 1.0, 1.0],
        [0.5, 0.995, 2.0],  # member 1 improves by only 0.5 %: not an improvement
        [0.6, 0.3, 0.9],
        [0.6, 0.3, 0.895],  # member 2: < 1 % better again -> no improvement anywhere
        [0.6, 0.3, 0.9],
        [0.7, 0.4, 0.9],  # third non-improving epoch -> stop with patience 3
        [0.0, 0.0, 0.0],  # never reached
    ]
    record: list = []
    scripted_holdout(monkeypatch, metrics, record)
    model = make_model(patience=3)
    report = model.fit(random_data(100), torch.Generator().manual_seed(0))
    assert isinstance(report, FitReport)
    assert report.epochs == 6
    assert report.member_holdout == pytest.approx([0.5, 0.3, 0.9])
    assert report.elites == [1, 0] and model.elites.tolist() == [1, 0]  # argmin order
    assert report.holdout_loss == pytest.approx(0.4)
    best_epoch = [1, 2, 2]  # 0-based epoch whose weights each member keeps
    for i, layer in enumerate(model.layers):
        for e, k in enumerate(best_epoch):
            torch.testing.assert_close(layer.weight[e], record[k][i][e])


def test_max_epochs_caps_training(monkeypatch: pytest.MonkeyPatch) -> None:
    record: list = []
    scripted_holdout(monkeypatch, [[1.0 / (k + 1)] * 3 for k in range(10)], record)
    report = make_model(max_epochs=3).fit(random_data(60), torch.Generator().manual_seed(0))
    assert report.epochs == 3 and len(record) == 3


def test_scaler_fitted_on_training_split_only() -> None:
    data = random_data(100)
    with torch.no_grad():
        data.act[:, 1] = 0.25  # constant input: σ = 0 -> 1
    model = make_model(max_epochs=1)
    gen = torch.Generator().manual_seed(3)
    model.fit(data, gen)
    perm = torch.randperm(100, generator=torch.Generator().manual_seed(3))
    x_tr = torch.cat([data.obs, data.act], 1)[perm[20:]]
    torch.testing.assert_close(model.scaler_mean, x_tr.mean(0))
    expected_std = x_tr.std(0, unbiased=False)
    expected_std[4] = 1.0
    torch.testing.assert_close(model.scaler_std, expected_std)


def test_fixed_generator_gives_identical_fit() -> None:
    data = random_data(120)
    reports, states = [], []
    for _ in range(2):
        model = make_model(seed=5, max_epochs=3)
        reports.append(model.fit(data, torch.Generator().manual_seed(11)))
        states.append(model.state_dict())
    assert reports[0].member_holdout == reports[1].member_holdout and reports[0].elites == reports[1].elites
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
    # no generator: seeded from torch's RNG, so torch.manual_seed reproduces it
    outs = []
    for _ in range(2):
        model = make_model(seed=5, max_epochs=2)
        torch.manual_seed(42)
        outs.append(model.fit(data).member_holdout)
    assert outs[0] == outs[1]


def test_fit_with_progress_bar() -> None:
    report = make_model(max_epochs=2).fit(random_data(60), torch.Generator().manual_seed(0), progress=True)
    assert report.epochs == 2 and len(report.extra["holdout_history"]) == 2


def test_state_dict_and_file_round_trip(tmp_path) -> None:
    model = make_model(max_epochs=2)
    model.fit(random_data(80), torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.max_logvar.add_(0.1)
    other = make_model(seed=9)
    other.load_state_dict(model.state_dict())
    obs, act = torch.randn(6, 3), torch.randn(6, 2)
    for a, b in zip(model(obs, act), other(obs, act), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(other.elites, model.elites) and torch.equal(other.scaler_std, model.scaler_std)
    path = model.save(tmp_path / "sub" / "model.pt")
    loaded = GaussianEnsemble.from_file(path)
    again = make_model(seed=3).load(path)
    for m in (loaded, again):
        for a, b in zip(model(obs, act), m(obs, act), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(m.elites, model.elites)
    with pytest.raises(ValueError, match="hidden"):
        make_model(hidden=[4, 4]).load(path)


def test_recovers_linear_gaussian_system() -> None:
    """s' = s + A s + B a + ε, r = c·s + d·a + ε_r with known diagonal noise: mean map and σ recovered."""
    g = torch.Generator().manual_seed(0)
    d_s, d_a, n = 3, 2, 3000
    a_mat = 0.1 * torch.randn(d_s, d_s, generator=g)
    b_mat = 0.3 * torch.randn(d_a, d_s, generator=g)
    c_vec, d_vec = 0.3 * torch.randn(d_s, 1, generator=g), 0.3 * torch.randn(d_a, 1, generator=g)
    noise = torch.tensor([0.1, 0.2, 0.3, 0.15])  # Δs dims, then reward

    def draw(m: int) -> Transitions:
        obs = torch.randn(m, d_s, generator=g)
        act = torch.rand(m, d_a, generator=g) * 2 - 1
        eps = torch.randn(m, d_s + 1, generator=g) * noise
        next_obs = obs + obs @ a_mat + act @ b_mat + eps[:, :d_s]
        reward = obs @ c_vec + act @ d_vec + eps[:, d_s:]
        zeros = torch.zeros(m, 1)
        return Transitions(obs=obs, act=act, reward=reward, next_obs=next_obs, terminal=zeros, timeout=zeros)

    torch.manual_seed(0)
    model = create(
        "dynamics", "gaussian_ensemble", EnvSpec(d_s, d_a), "cpu",
        ensemble=3, elites=2, hidden=[64, 64], weight_decay=[1e-5, 1e-5, 1e-5], batch_size=64, lr=3e-3,
        max_epochs=20, patience=30, logvar_coef=0.001,
    )  # fmt: skip
    model.fit(draw(n), torch.Generator().manual_seed(1))
    test = draw(1000)
    mean, logvar = model(test.obs, test.act)
    true_mean = torch.cat([test.obs @ a_mat + test.act @ b_mat, test.obs @ c_vec + test.act @ d_vec], 1)
    elite_mean = mean[model.elites].mean(0)
    rmse = (elite_mean - true_mean).pow(2).mean(0).sqrt()
    assert torch.all(rmse < 0.35 * noise), (rmse, noise)
    sigma = torch.exp(0.5 * logvar[model.elites]).mean(dim=(0, 1))
    assert torch.allclose(sigma, noise, rtol=0.12), (sigma, noise)


# -- §8 sampling ------------------------------------------------------------------------------------
def test_step_shapes_elites_and_log_prob() -> None:
    model = make_model()
    with torch.no_grad():
        model.elites.copy_(torch.tensor([2, 0]))
    obs, act = torch.randn(500, 3, requires_grad=True), torch.randn(500, 2)
    out = model.step(obs, act, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, ModelStep)
    assert out.next_obs.shape == (500, 3) and out.reward.shape == (500, 1) and out.terminal.shape == (500, 1)
    assert out.member.shape == (500,) and out.member.dtype == torch.long
    assert out.mean.shape == out.logvar.shape == (3, 500, 4) and out.log_prob.shape == (500,)
    assert set(out.member.tolist()) == {0, 2}
    assert torch.all(out.terminal == 0) and not out.next_obs.requires_grad
    direct = model.log_prob(obs, act, out.next_obs, out.reward, member=out.member)
    torch.testing.assert_close(out.log_prob, direct.detach(), rtol=1e-4, atol=1e-4)
    again = model.step(obs, act, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.next_obs, out.next_obs) and torch.equal(again.member, out.member)


def test_step_samples_follow_member_gaussians() -> None:
    model = make_model()
    obs, act = torch.randn(1, 3).expand(20_000, 3), torch.randn(1, 2).expand(20_000, 2)
    out = model.step(obs, act, generator=torch.Generator().manual_seed(0))
    k = int(model.elites[0])
    rows = out.member == k
    y = torch.cat([out.next_obs - obs, out.reward], 1)[rows]
    torch.testing.assert_close(y.mean(0), out.mean[k, 0], atol=0.1, rtol=0)
    torch.testing.assert_close(y.std(0), torch.exp(0.5 * out.logvar[k, 0]), rtol=0.05, atol=0)


def test_sample_every_member_one_member_and_reparam() -> None:
    model = make_model()
    obs, act = torch.randn(5, 3), torch.randn(5, 2)
    nxt, rew = model.sample(obs, act, generator=torch.Generator().manual_seed(0))
    assert nxt.shape == (3, 5, 3) and rew.shape == (3, 5, 1) and not nxt.requires_grad
    member = torch.tensor([0, 1, 2, 1, 0])
    nxt1, rew1 = model.sample(obs, act, member=member, generator=torch.Generator().manual_seed(0))
    assert nxt1.shape == (5, 3) and rew1.shape == (5, 1)
    nxt_r, rew_r = model.sample(obs, act, member=member, reparam=True, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(nxt_r.detach(), nxt1)
    (nxt_r.sum() + rew_r.sum()).backward()
    assert all(p.grad is not None for p in model.model_parameters())
    # zero noise std -> the sample is the mean
    with torch.no_grad():
        model.max_logvar.fill_(-60.0)
        model.min_logvar.fill_(-80.0)
    mean, _ = model(obs, act)
    nxt0, rew0 = model.sample(obs, act)
    torch.testing.assert_close(nxt0, obs + mean[..., :3])
    torch.testing.assert_close(rew0, mean[..., 3:])


def test_sample_next_states_elites_only() -> None:
    model = make_model()
    with torch.no_grad():
        model.elites.copy_(torch.tensor([2, 1]))
    obs, act = torch.randn(4, 3), torch.randn(4, 2)
    states = model.sample_next_states(obs, act, 10, generator=torch.Generator().manual_seed(0))
    assert states.shape == (10, 2, 4, 3)
    states2, rewards = model.sample_next_states(
        obs, act, 10, generator=torch.Generator().manual_seed(0), with_reward=True
    )
    assert rewards.shape == (10, 2, 4, 1) and states2.shape == (10, 2, 4, 3)
    with torch.no_grad():
        model.max_logvar.fill_(-60.0)
        model.min_logvar.fill_(-80.0)
    mean, _ = model(obs, act)
    det = model.sample_next_states(obs, act, 3)
    torch.testing.assert_close(det, (obs + mean[[2, 1], :, :3]).expand(3, -1, -1, -1))


# -- §9 log-probabilities ---------------------------------------------------------------------------
def test_log_prob_matches_normal_member_and_mixture() -> None:
    model = make_model()
    with torch.no_grad():
        model.elites.copy_(torch.tensor([0, 2]))
    obs, act = torch.randn(6, 3), torch.randn(6, 2)
    next_obs, reward = obs + 0.3 * torch.randn(6, 3), torch.randn(6, 1)
    mean, logvar = model(obs, act)
    y = torch.cat([next_obs - obs, reward], 1)
    per_member = torch.distributions.Normal(mean, torch.exp(0.5 * logvar)).log_prob(y).sum(-1)  # [E, B]
    member = torch.tensor([0, 1, 2, 2, 1, 0])
    lp = model.log_prob(obs, act, next_obs, reward, member=member)
    torch.testing.assert_close(lp, per_member[member, torch.arange(6)])
    mix = model.log_prob(obs, act, next_obs, reward)
    expected = torch.log(torch.exp(per_member[[0, 2]].double()).mean(0)).float()
    torch.testing.assert_close(mix, expected)
    torch.testing.assert_close(model.log_prob(obs, act, next_obs, reward, mixture="exp_float64"), mix)
    mix.sum().backward()
    assert all(p.grad is not None for p in model.model_parameters())


def test_mixture_logsumexp_stays_finite_where_exp_underflows() -> None:
    model = make_model()
    obs, act = torch.randn(4, 3), torch.randn(4, 2)
    far = obs + 1e4  # every member's log-density far below −745
    reward = torch.zeros(4, 1)
    lse = model.log_prob(obs, act, far, reward)
    assert torch.all(torch.isfinite(lse)) and torch.all(lse < -745)
    exp64 = make_model(mixture_logprob="exp_float64").log_prob(obs, act, far, reward)
    assert torch.all(torch.isneginf(exp64))
    per_member = model.log_prob(obs, act, far, reward, member=torch.zeros(4, dtype=torch.long))
    assert torch.all(torch.isfinite(per_member))


def test_no_grad_forward_equals_autograd_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ens_mod, "INFERENCE_CHUNK", 7)  # several chunks, the last one short
    model = make_model()
    obs, act = torch.randn(30, 3), torch.randn(30, 2)
    mean, logvar = model(obs, act)
    with torch.no_grad():
        mean_ng, logvar_ng = model(obs, act)
        per_member = model(obs.expand(3, -1, -1), act.expand(3, -1, -1))
    torch.testing.assert_close(mean_ng, mean.detach())
    torch.testing.assert_close(logvar_ng, logvar.detach())
    torch.testing.assert_close(per_member[0], mean.detach())
