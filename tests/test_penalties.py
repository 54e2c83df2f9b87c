"""Penalties: exact checks against direct Python-loop computations (dynamics.md §11, mobile.md §1-§2, §5)."""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import zoo
from zoo.protocols import Batch, EnvSpec, ModelStep, Penalty

E, B, DS = 4, 3, 2  # members, rows, state dims; D = DS + 1
ELITES = [3, 1]


def hand_step(seed: int = 0) -> ModelStep:
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(E, B, DS + 1, generator=g)
    logvar = torch.randn(E, B, DS + 1, generator=g)
    obs = torch.randn(B, DS, generator=g)
    return ModelStep(
        obs=obs,
        act=torch.zeros(B, 1),
        next_obs=obs + mean[0, :, :DS],
        reward=mean[0, :, DS:],
        terminal=torch.zeros(B, 1),
        member=torch.zeros(B, dtype=torch.long),
        mean=mean,
        logvar=logvar,
        log_prob=torch.zeros(B),
    )


def ctx_with(model: Any, generator: torch.Generator | None = None) -> SimpleNamespace:
    return SimpleNamespace(model=model, generator=generator or torch.Generator().manual_seed(0))


ELITE_CTX = ctx_with(SimpleNamespace(elites=torch.tensor(ELITES)))


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def members(which: str) -> list[int]:
    return list(range(E)) if which == "all" else ELITES


@pytest.mark.parametrize("which", ["all", "elites"])
@pytest.mark.parametrize("dims", ["all", "state"])
def test_mopo_aleatoric_is_max_member_std_norm(which: str, dims: str) -> None:
    step = hand_step()
    pen = zoo.create("penalty", "mopo", coef=2.5, members=which, dims=dims)
    assert isinstance(pen, Penalty) and pen.stage == "rollout"
    out = pen(step, ELITE_CTX)
    d = DS + 1 if dims == "all" else DS
    lv = step.logvar.tolist()
    expected = [
        [2.5 * max(norm([math.exp(lv[e][b][k] / 2) for k in range(d)]) for e in members(which))] for b in range(B)
    ]
    assert out.shape == (B, 1)
    torch.testing.assert_close(out, torch.tensor(expected))


@pytest.mark.parametrize("which", ["all", "elites"])
def test_mopo_pairwise_diff_and_ensemble_std(which: str) -> None:
    step = hand_step(1)
    mu = step.mean.tolist()
    ms = members(which)
    pairwise, ens_std = [], []
    for b in range(B):
        avg = [sum(mu[e][b][k] for e in ms) / len(ms) for k in range(DS)]
        pairwise.append([max(norm([mu[e][b][k] - avg[k] for k in range(DS)]) for e in ms)])
        var = [sum((mu[e][b][k] - avg[k]) ** 2 for e in ms) / len(ms) for k in range(DS)]
        ens_std.append([math.sqrt(sum(var) / DS)])
    pd = zoo.create("penalty", "mopo", mode="pairwise-diff", members=which)(step, ELITE_CTX)
    es = zoo.create("penalty", "mopo", mode="ensemble_std", coef=0.5, members=which)(step, ELITE_CTX)
    torch.testing.assert_close(pd, torch.tensor(pairwise))
    torch.testing.assert_close(es, 0.5 * torch.tensor(ens_std))


@pytest.mark.parametrize("which", ["all", "elites"])
def test_disagreement_is_max_pairwise_distance(which: str) -> None:
    step = hand_step(2)
    mu = step.mean.tolist()
    ms = members(which)
    expected = [[max(norm([mu[i][b][k] - mu[j][b][k] for k in range(DS)]) for i in ms for j in ms)] for b in range(B)]
    out = zoo.create("penalty", "disagreement", coef=3.0, members=which)(step, ELITE_CTX)
    torch.testing.assert_close(out, 3.0 * torch.tensor(expected))


def test_none_and_bad_config() -> None:
    pen = zoo.create("penalty", "none")
    assert pen.stage == "rollout"
    assert torch.equal(pen(hand_step(), ELITE_CTX), torch.zeros(B, 1))
    with pytest.raises(ValueError, match="mode"):
        zoo.create("penalty", "mopo", mode="nope")
    with pytest.raises(ValueError, match="form"):
        zoo.create("penalty", "mobile", form="nope")


# -- MOBILE ---------------------------------------------------------------------------------------
N_SAMPLES, N_CRITICS, GAMMA = 4, 2, 0.9


@dataclass
class FakeModel:
    """Test double of the ensemble: sample_next_states returns tensors the test controls."""

    states: torch.Tensor  # [n, |El|, B, d_s]
    rewards: torch.Tensor  # [n, |El|, B, 1]
    elites: torch.Tensor = field(default_factory=lambda: torch.tensor([0, 2, 1]))
    calls: list[tuple[int, bool]] = field(default_factory=list)

    def sample_next_states(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        n: int,
        generator: torch.Generator | None = None,
        with_reward: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        self.calls.append((n, with_reward))
        assert n == self.states.shape[0]
        return (self.states, self.rewards) if with_reward else self.states


class FakeLearner:
    """Deterministic actor a(s) = tanh(Σ s) and two linear critics Q_j(s, a) = w_j·s + v_j a."""

    gamma = GAMMA
    w = torch.tensor([[0.5, -1.0], [1.5, 0.25]])
    v = torch.tensor([2.0, -0.5])

    def act(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        assert not deterministic  # stochastic next actions (mobile.md §5 #4)
        a = torch.tanh(obs.sum(-1, keepdim=True))
        return a, a, torch.zeros_like(a)

    def q(self, obs: torch.Tensor, act: torch.Tensor, target: bool = False) -> torch.Tensor:
        assert target  # target critics (mobile.md §5 #4)
        return torch.stack([obs @ self.w[j] + self.v[j] * act[..., 0] for j in range(2)]).unsqueeze(-1)

    @classmethod
    def q_loop(cls, s: list[float]) -> float:
        a = math.tanh(sum(s))
        return min(sum(cls.w[j, k].item() * s[k] for k in range(DS)) + cls.v[j].item() * a for j in range(2))


def mobile_case(seed: int = 0) -> tuple[FakeModel, Batch]:
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(N_SAMPLES, 3, B, DS, generator=g)
    rewards = torch.randn(N_SAMPLES, 3, B, 1, generator=g)
    batch = Batch(
        obs=torch.randn(B, DS, generator=g),
        act=torch.randn(B, 1, generator=g),
        reward=torch.zeros(B, 1),
        next_obs=torch.randn(B, DS, generator=g),
        terminal=torch.zeros(B, 1),
        is_model=torch.tensor([[0.0], [1.0], [1.0]]),  # first row real
    )
    return FakeModel(states, rewards), batch


@pytest.mark.parametrize("form", ["code", "paper"])
@pytest.mark.parametrize("ddof", [1, 0])
def test_mobile_equals_python_loop(form: str, ddof: int) -> None:
    model, batch = mobile_case()
    pen = zoo.create("penalty", "mobile", coef=1.5, samples=N_SAMPLES, ddof=ddof, form=form)
    assert isinstance(pen, Penalty) and pen.stage == "target"
    out = pen(batch, FakeLearner(), ctx_with(model))
    s, r = model.states.tolist(), model.rewards.tolist()
    expected = []
    for b in range(B):
        per_elite = []
        for e in range(3):
            vals = [FakeLearner.q_loop(s[k][e][b]) for k in range(N_SAMPLES)]
            if form == "paper":
                vals = [r[k][e][b][0] + GAMMA * vals[k] for k in range(N_SAMPLES)]
            per_elite.append(sum(vals) / N_SAMPLES)
        u = statistics.stdev(per_elite) if ddof == 1 else statistics.pstdev(per_elite)
        expected.append([1.5 * u * float(batch.is_model[b])])
    assert model.calls == [(N_SAMPLES, form == "paper")]
    assert out.shape == (B, 1) and float(out[0]) == 0.0  # real row
    torch.testing.assert_close(out, torch.tensor(expected))


def test_mobile_computes_only_the_model_rows_when_the_batch_says_where_they_start() -> None:
    """With ``n_real`` known (the trainer's batches), u is computed on the model rows alone: the same values as
    the whole-batch computation there, zeros on the real rows, and no model call when every row is real."""
    offsets = torch.randn(N_SAMPLES, 3, 1, DS, generator=torch.Generator().manual_seed(5))
    rows_seen: list[int] = []

    def sample_next_states(obs, act, n, generator=None, with_reward=False):  # deterministic in obs
        rows_seen.append(obs.shape[0])
        states = obs + offsets
        return (states, states[..., :1]) if with_reward else states

    model = SimpleNamespace(sample_next_states=sample_next_states, elites=torch.tensor([0, 2, 1]))
    _, batch = mobile_case()
    pen = zoo.create("penalty", "mobile", coef=1.5, samples=N_SAMPLES)
    whole = pen(batch, FakeLearner(), ctx_with(model))
    model_rows_only = pen(dataclasses.replace(batch, n_real=1), FakeLearner(), ctx_with(model))
    assert rows_seen == [B, B - 1]
    assert float(model_rows_only[0]) == 0.0 and model_rows_only.shape == (B, 1)
    torch.testing.assert_close(model_rows_only, whole)
    all_real = pen(dataclasses.replace(batch, n_real=B), FakeLearner(), ctx_with(model))
    assert torch.equal(all_real, torch.zeros(B, 1)) and rows_seen == [B, B - 1]


def test_mobile_all_members_samples_from_forward() -> None:
    """members="all": s' = s + μ_e^Δs + σ_e ξ over every member; with σ ≈ 0 the samples are the means."""
    mean = torch.randn(E, B, DS + 1)
    model = SimpleNamespace(forward=lambda o, a: (mean, torch.full_like(mean, -80.0)), elites=torch.tensor([0]))
    _, batch = mobile_case()
    pen = zoo.create("penalty", "mobile", samples=3, members="all")
    out = pen(batch, FakeLearner(), ctx_with(model))
    obs, mu = batch.obs.tolist(), mean.tolist()
    for b in range(1, B):
        qs = [FakeLearner.q_loop([obs[b][k] + mu[e][b][k] for k in range(DS)]) for e in range(E)]
        assert float(out[b]) == pytest.approx(statistics.stdev(qs), rel=1e-5)


def _sac(spec: EnvSpec) -> Any:
    return zoo.create("learner", "sac", spec, "cpu", hidden=[16, 16], num_critics=N_CRITICS)


def test_mobile_with_real_learner_matches_loop_and_has_no_gradient() -> None:
    """Real SAC learner: the batched pass equals per-(sample, elite) calls with the same action noise."""
    model, batch = mobile_case(3)
    spec = EnvSpec(obs_dim=DS, act_dim=1)
    learner = _sac(spec)
    pen = zoo.create("penalty", "mobile", samples=N_SAMPLES)
    out = pen(batch, learner, ctx_with(model, torch.Generator().manual_seed(7)))
    assert out.shape == (B, 1) and not out.requires_grad and float(out[0]) == 0.0
    # reproduce: the actions are drawn once for all n·|El|·B rows, in that (row-major) order
    g = torch.Generator().manual_seed(7)
    flat = model.states.reshape(-1, DS)
    act, _, _ = learner.act(flat, generator=g)
    act = act.view(N_SAMPLES, 3, B, 1)
    with torch.no_grad():
        q = torch.stack(
            [
                torch.stack([learner.q(model.states[k, e], act[k, e], target=True).amin(0) for e in range(3)])
                for k in range(N_SAMPLES)
            ]
        )  # [n, El, B, 1]
    expected = q.mean(0).std(0) * batch.is_model
    torch.testing.assert_close(out, expected)
    # as a target penalty inside update
    metrics = learner.update(batch, target_penalty=pen.bind(ctx_with(model)))
    assert "penalty_mean" in metrics and metrics["penalty_mean"] >= 0


def test_mobile_with_gaussian_ensemble() -> None:
    """Integration with the real ensemble (untrained; elites = the first ones): shapes, zero real rows."""
    spec = EnvSpec(obs_dim=3, act_dim=2)
    model = zoo.create(
        "dynamics",
        "gaussian_ensemble",
        spec,
        "cpu",
        ensemble=4,
        elites=3,
        hidden=[16, 16],
        weight_decay=[0.0, 0.0, 0.0],
    )
    learner = _sac(spec)
    g = torch.Generator().manual_seed(0)
    batch = Batch(
        obs=torch.randn(6, 3, generator=g),
        act=torch.rand(6, 2, generator=g) * 2 - 1,
        reward=torch.zeros(6, 1),
        next_obs=torch.randn(6, 3, generator=g),
        terminal=torch.zeros(6, 1),
        is_model=torch.tensor([[0.0], [0.0], [1.0], [1.0], [1.0], [1.0]]),
    )
    ctx = ctx_with(model)
    for form in ("code", "paper"):
        out = zoo.create("penalty", "mobile", samples=5, form=form)(batch, learner, ctx)
        assert out.shape == (6, 1) and torch.isfinite(out).all()
        assert torch.all(out[:2] == 0) and torch.all(out[2:] > 0)
    # rollout penalties on a real model step
    step = model.step(batch.obs, batch.act)
    for name in ("mopo", "disagreement"):
        u = zoo.create("penalty", name, members="elites")(step, ctx)
        assert u.shape == (6, 1) and torch.all(u >= 0)
