"""MOReL's pieces: the deterministic ensemble (MSE, no likelihood), the USAD threshold and HALT transitions on
hand-built cases, halting inside a real model rollout, and the capability check that refuses likelihood-based
components with the deterministic ensemble when a config is resolved."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoo.config import resolve
from zoo.data.transitions import Transitions
from zoo.dynamics.deterministic import NoLikelihoodError
from zoo.engine.buffer import RingBuffer
from zoo.engine.rollout import model_rollout
from zoo.penalties.morel import MorelHaltPenalty, usad_threshold
from zoo.protocols import Context, EnvSpec, ModelStep
from zoo.registry import REGISTRY, ConfigKeyError

SPEC = EnvSpec(obs_dim=3, act_dim=2)


def linear_data(n: int, seed: int = 0) -> tuple[Transitions, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a_mat = rng.normal(size=(5, 4)) * 0.5  # [s, a] -> [Δs, r]
    obs = rng.normal(size=(n, 3))
    act = rng.uniform(-1, 1, size=(n, 2))
    y = np.concatenate([obs, act], 1) @ a_mat + 0.3
    data = Transitions.from_numpy(
        obs=obs, act=act, reward=y[:, 3], next_obs=obs + y[:, :3], terminal=np.zeros(n), timeout=np.zeros(n)
    )
    return data, a_mat, obs


def test_deterministic_ensemble_recovers_a_linear_map() -> None:
    data, a_mat, _ = linear_data(1000)
    torch.manual_seed(0)
    model = REGISTRY.create(
        "dynamics", "deterministic_ensemble", SPEC, "cpu", hidden=[32, 32], weight_decay=[0.0] * 3, max_epochs=60,
        lr=1e-2,
    )
    report = model.fit(data, generator=torch.Generator().manual_seed(0))
    assert report.epochs == 60 and sorted(report.elites) == [0, 1, 2, 3]
    rng = np.random.default_rng(1)
    obs = torch.tensor(rng.normal(size=(500, 3)), dtype=torch.float32)
    act = torch.tensor(rng.uniform(-1, 1, size=(500, 2)), dtype=torch.float32)
    truth = torch.cat([obs, act], 1) @ torch.tensor(a_mat, dtype=torch.float32) + 0.3
    with torch.no_grad():
        mean, logvar = model.forward(obs, act)
    assert mean.shape == (4, 500, 4) and torch.isneginf(logvar).all()  # a point mass
    rel_err = ((mean - truth) ** 2).mean() / truth.var()
    assert float(rel_err) < 2e-3, float(rel_err)
    step = model.step(obs, act, generator=torch.Generator().manual_seed(0))
    rows = torch.arange(500)
    torch.testing.assert_close(step.next_obs, obs + mean[step.member, rows, :3])  # the member's mean, no noise
    torch.testing.assert_close(step.reward, mean[step.member, rows, 3:])
    # USAD's premise: the members agree on the data and disagree far from it
    usad = MorelHaltPenalty(MorelHaltPenalty.Config())
    near = usad.disagreement(mean, None).mean()
    with torch.no_grad():
        far = usad.disagreement(model.forward(obs * 20, act)[0], None).mean()
    assert float(far) > 10 * float(near)


def test_no_likelihood_is_a_clear_error() -> None:
    model = REGISTRY.create("dynamics", "deterministic_ensemble", SPEC, "cpu", hidden=[8], weight_decay=[0.0, 0.0])
    obs, act = torch.zeros(2, 3), torch.zeros(2, 2)
    with pytest.raises(NoLikelihoodError, match="gaussian_ensemble"):
        model.log_prob(obs, act, obs, torch.zeros(2, 1))
    with pytest.raises(NoLikelihoodError, match="mse"):
        model.nll(None)


class HandBuiltModel:
    """Two members predicting Δs = 1 in every dim, except that member 1 adds obs₀ to the first dim: the
    largest pairwise distance of their next states is exactly |obs₀|. Reward = obs₀."""

    elites = torch.tensor([0, 1])

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ones = torch.ones(obs.shape[0], 3)
        m0 = torch.cat([ones, obs[:, :1]], 1)
        m1 = torch.cat([ones + torch.nn.functional.pad(obs[:, :1], (0, 2)), obs[:, :1]], 1)
        mean = torch.stack([m0, m1])
        return mean, torch.full_like(mean, -math.inf)

    def step(self, obs: torch.Tensor, act: torch.Tensor, generator: torch.Generator | None = None) -> ModelStep:
        mean, logvar = self.forward(obs, act)
        n = obs.shape[0]
        return ModelStep(
            obs=obs, act=act, next_obs=obs + 1.0, reward=obs[:, :1].clone(), terminal=torch.zeros(n, 1),
            member=torch.zeros(n, dtype=torch.long), mean=mean, logvar=logvar, log_prob=torch.zeros(n),
        )


def hand_context(obs0: list[float]) -> Context:
    obs = torch.zeros(len(obs0), 3)
    obs[:, 0] = torch.tensor(obs0)
    data = Transitions.from_numpy(
        obs=obs.numpy(), act=np.zeros((len(obs0), 2)), reward=np.zeros(len(obs0)), next_obs=obs.numpy(),
        terminal=np.zeros(len(obs0)), timeout=np.zeros(len(obs0)),
    )
    return Context(data=data, model=HandBuiltModel(), learner=None, termination=None, normalizer=None,
                   device=torch.device("cpu"), generator=torch.Generator().manual_seed(0), spec=SPEC)


def test_usad_threshold_from_the_dataset_disagreements() -> None:
    ctx = hand_context([0.0, -6.0, 1.0, 3.0, 2.0])  # disagreements 0, 6, 1, 3, 2
    penalty = MorelHaltPenalty(MorelHaltPenalty.Config(pessimism=3.0))
    assert float(penalty.fit_threshold(ctx)) == pytest.approx(6.0 / 3.0)  # MOReL: max / pessimism
    quant = MorelHaltPenalty(MorelHaltPenalty.Config(pessimism=2.0, threshold_stat="quantile", quantile=0.5))
    assert float(quant.fit_threshold(ctx)) == pytest.approx(2.0 / 2.0)  # median of {0, 1, 2, 3, 6} = 2
    fixed = MorelHaltPenalty(MorelHaltPenalty.Config(threshold=0.25))
    assert float(fixed.fit_threshold(ctx)) == pytest.approx(0.25)
    disc = torch.tensor([[0.0], [4.0], [1.0]])
    assert float(usad_threshold(disc, "max", 2.0, 0.0)) == 2.0


def test_halt_transitions_on_a_hand_built_case() -> None:
    ctx = hand_context([0.0, 6.0])  # threshold = 6 / 3 = 2
    obs = torch.zeros(4, 3)
    obs[:, 0] = torch.tensor([0.5, 2.0, 2.5, -7.0])  # disagreements 0.5, 2.0, 2.5, 7.0
    step = HandBuiltModel().step(obs, torch.zeros(4, 2))
    code = MorelHaltPenalty(MorelHaltPenalty.Config(kappa=10.0))
    assert code.halt(step, ctx).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]  # strictly above the threshold
    assert code(step, ctx).flatten().tolist() == [0.0, 0.0, 10.0, 10.0]  # stored reward r̂ − κ (MOReL's code)
    paper = MorelHaltPenalty(MorelHaltPenalty.Config(kappa=10.0, reward="paper"))
    stored = step.reward - paper(step, ctx)
    assert stored.flatten().tolist() == [0.5, 2.0, -10.0, -10.0]  # HALT pays −κ (the paper's P-MDP)


def test_halting_rows_are_terminal_and_their_branches_stop() -> None:
    """Start obs₀ = 0, 1, 2 with threshold 2.5: each step adds 1 to obs₀, so the third row halts at step 2 and the
    second at step 3; halted rows are stored terminal with reward r̂ − κ and roll no further."""
    ctx = hand_context([0.0, 7.5])  # threshold = 7.5 / 3 = 2.5
    learner = REGISTRY.create("learner", "sac", SPEC, "cpu", hidden=[8])
    buffer = RingBuffer(100, 3, 2, "cpu")
    start = torch.zeros(3, 3)
    start[:, 0] = torch.tensor([0.0, 1.0, 2.0])
    penalty = MorelHaltPenalty(MorelHaltPenalty.Config(kappa=100.0))
    stats = model_rollout(
        HandBuiltModel(), learner, start, 3, lambda o, a, o2: torch.zeros(o.shape[0], 1), buffer, penalty, ctx
    )
    obs0 = buffer.storage["obs"][: buffer.size, 0].tolist()
    assert obs0 == [0.0, 1.0, 2.0, 1.0, 2.0, 3.0, 2.0, 3.0]  # 3 + 3 + 2 transitions
    assert buffer.storage["terminal"][: buffer.size, 0].tolist() == [0, 0, 0, 0, 0, 1, 0, 1]
    assert buffer.storage["reward"][: buffer.size, 0].tolist() == [0, 1, 2, 1, 2, 3 - 100, 2, 3 - 100]
    assert stats.transitions == 8 and stats.terminal_frac == pytest.approx(2 / 8)


@pytest.mark.parametrize(
    ("overrides", "missing"),
    [
        (["dynamics.name=deterministic_ensemble", "penalty.name=mopo"], "variance"),  # MOPO's aleatoric penalty
        (["dynamics.name=deterministic_ensemble", "rule.name=rambo"], "log_prob"),
        (["dynamics.name=deterministic_ensemble", "rule.name=romi"], "log_prob"),
        (["dynamics.name=deterministic_ensemble", "rule.name=rombrl"], "log_prob"),
    ],
)
def test_likelihood_components_refuse_the_deterministic_ensemble_at_resolution(overrides: list, missing: str) -> None:
    with pytest.raises(ConfigKeyError, match=f"needs the dynamics model's .*{missing}.*deterministic_ensemble"):
        resolve("mbpo", task="pendulum-medium", overrides=overrides)


def test_mean_only_components_accept_the_deterministic_ensemble() -> None:
    det = "dynamics.name=deterministic_ensemble"
    assert resolve("mopo", overrides=[det, "penalty.mode=pairwise-diff"]).dynamics.name == "deterministic_ensemble"
    for penalty in ("none", "disagreement", "mobile", "morel"):
        assert resolve("mbpo", overrides=[det, f"penalty.name={penalty}"]).penalty.name == penalty
    assert resolve("morel", overrides=["dynamics.name=gaussian_ensemble"]).penalty.name == "morel"


def test_morel_recipe_resolves_the_released_settings() -> None:
    cfg = resolve("morel", task="hopper-medium-v2")
    dyn, pen = cfg.dynamics.cfg, cfg.penalty.cfg
    assert cfg.dynamics.name == "deterministic_ensemble" and cfg.penalty.name == "morel"
    assert (dyn.ensemble, dyn.hidden, dyn.activation, dyn.lr, dyn.max_epochs, dyn.bootstrap) == (
        4, [512, 512], "relu", 1e-3, 25, False,
    )
    assert (pen.pessimism, pen.kappa, pen.threshold_stat, pen.members) == (3.0, 0.0, "max", "all")
    assert cfg.learner.name == "sac"
    assert resolve("morel", task="pendulum-medium").penalty.cfg.kappa > 0  # negative rewards: HALT must cost
