"""The ``cql`` learner (COMBO's conservative SAC, combo.md) and the ``combo`` recipe: the log-sum-exp term against a
direct per-state computation in both layouts, the conservative term, its effect on Q, the update order and the
Lagrange form."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.config import resolve
from zoo.learners.cql import CQL
from zoo.learners.sac import SAC
from zoo.protocols import Batch, EnvSpec
from zoo.registry import REGISTRY, ConfigKeyError

SPEC = EnvSpec(obs_dim=3, act_dim=2, act_low=-2.0, act_high=2.0)


def make(**cfg: object) -> CQL:
    torch.manual_seed(0)
    return REGISTRY.create("learner", "cql", SPEC, "cpu", hidden=[16, 16], **cfg)


def make_batch(n: int = 6, n_real: int = 2, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, SPEC.obs_dim, generator=g),
        act=(torch.rand(n, SPEC.act_dim, generator=g) * 2 - 1) * SPEC.act_high,
        reward=torch.randn(n, 1, generator=g),
        next_obs=torch.randn(n, SPEC.obs_dim, generator=g),
        terminal=torch.zeros(n, 1),
        is_model=torch.cat([torch.zeros(n_real, 1), torch.ones(n - n_real, 1)]),
    )


def direct_lse(learner: CQL, batch: Batch, proposals: tuple, layout: str) -> torch.Tensor:
    """Per critic j and state b, one Q evaluation per (state, action) pair and a plain log-sum-exp:
    [N, B] ("correct": over the 3R values of the state) or [N, R, B] ("olk_bug": over the 3 sources per repeat)."""
    a_pi, logp_pi, a_next, logp_next, a_unif = proposals
    temp = learner.cfg.temperature
    uniform_correction = SPEC.act_dim * math.log(SPEC.act_high - SPEC.act_low)  # −log density of U[−2, 2]²
    n_critics, r = learner.cfg.num_critics, learner.cfg.num_repeat
    out = torch.zeros(n_critics, r, len(batch)) if layout == "olk_bug" else torch.zeros(n_critics, len(batch))
    with torch.no_grad():
        for b in range(len(batch)):
            s = batch.obs[b : b + 1]
            for j in range(n_critics):
                per_repeat = []
                for k in range(r):
                    q = [learner.q(s, a[k, b : b + 1])[j, 0, 0] for a in (a_pi, a_next, a_unif)]
                    per_repeat.append(
                        [q[0] - logp_pi[k, b, 0], q[1] - logp_next[k, b, 0], q[2] + uniform_correction]
                    )
                if layout == "olk_bug":
                    for k, vals in enumerate(per_repeat):
                        out[j, k, b] = temp * torch.log(sum(torch.exp(v / temp) for v in vals))
                else:
                    vals = [v for row in per_repeat for v in row]
                    out[j, b] = temp * torch.log(sum(torch.exp(v / temp) for v in vals))
    return out


@pytest.mark.parametrize("layout", ["correct", "olk_bug"])
def test_logsumexp_term_matches_a_direct_computation(layout: str) -> None:
    learner = make(num_repeat=3, temperature=0.7, lse_layout=layout)
    batch = make_batch()
    # the learner works on populations ([P, ...]); a single run is P = 1
    proposals = learner.proposal_actions(batch.obs[None], batch.next_obs[None])
    a_pi, logp_pi, a_next, logp_next, a_unif = proposals
    assert a_pi.shape == a_next.shape == a_unif.shape == (1, 3, 6, 2) and logp_pi.shape == (1, 3, 6, 1)
    assert (a_unif.abs() <= 2.0).all() and a_unif.abs().max() > 1.0  # drawn over the env's own bounds
    with torch.no_grad():
        lse = learner.conservative_lse(batch.obs[None], *proposals)[0]
    expected = direct_lse(learner, batch, [p[0] for p in proposals], layout)
    torch.testing.assert_close(lse.squeeze(-1), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rho", ["mix", "model"])
def test_conservative_term_is_beta_times_lse_mean_minus_real_q(rho: str) -> None:
    learner = make(num_repeat=2, cql_weight=2.5, rho=rho)
    batch = make_batch(n=6, n_real=2)
    gen_state = torch.get_rng_state()
    with torch.no_grad():
        q_pred = learner.q(batch.obs, batch.act)
        term = learner.conservative_term(Batch.stack([batch]), q_pred[None])[0]  # a population of one
        torch.set_rng_state(gen_state)  # the same proposals again
        obs, next_obs = batch.obs[None], batch.next_obs[None]
        lse = learner.conservative_lse(obs, *learner.proposal_actions(obs, next_obs))[0][..., 0]
    states = slice(2, 6) if rho == "model" else slice(0, 6)
    expected = 2.5 * (lse[:, states].mean(1) - q_pred[:, :2, 0].mean(1))  # real rows are the first two
    torch.testing.assert_close(term, expected)


def test_the_conservative_term_pushes_down_q_off_the_data() -> None:
    """On one fixed batch, CQL's Q at uniformly random actions ends far below its Q at the data's actions; SAC's
    does not (the gap is what the term trains)."""
    batch = make_batch(n=64, n_real=64, seed=3)
    batch = batch.replace(act=torch.tanh(batch.obs[:, :2]) * 0.5)  # the data's actions are a function of s
    gaps = {}
    for name in ("sac", "cql"):
        torch.manual_seed(0)
        extra = {"cql_weight": 5.0, "num_repeat": 4} if name == "cql" else {}
        learner = REGISTRY.create("learner", name, SPEC, "cpu", hidden=[32, 32], critic_lr=1e-3, **extra)
        for _ in range(150):
            learner.update(batch)
        with torch.no_grad():
            rand = (torch.rand(64, 2, generator=torch.Generator().manual_seed(9)) * 2 - 1) * 2.0
            gaps[name] = float(learner.q(batch.obs, batch.act).mean() - learner.q(batch.obs, rand).mean())
    assert gaps["cql"] > gaps["sac"] + 1.0, gaps


def test_update_steps_the_actor_before_the_critic() -> None:
    """OLK's order (combo.md §2): the actor step sees the critics as they were before this update."""
    learner = make(num_repeat=2)
    batch = make_batch()
    order: list[str] = []
    sac = learner.sac
    for piece in ("actor_step_pop", "alpha_step", "critic_step", "polyak"):  # a single run is a population of one
        original = getattr(sac, piece)

        def record(*args: object, _piece: str = piece, _original: object = original) -> object:
            order.append(_piece)
            return _original(*args)  # type: ignore[operator]

        setattr(sac, piece, record)
    metrics = learner.update(batch)
    assert order == ["actor_step_pop", "alpha_step", "critic_step", "polyak"]
    assert {"conservative", "td_loss", "critic_loss", "actor_loss", "alpha"} <= set(metrics)
    assert isinstance(learner.sac, SAC)  # composed over SAC, not a copy of it


def test_alpha_is_not_clamped_by_default_and_lagrange_learns_its_multiplier() -> None:
    learner = make()
    assert learner.cfg.alpha_max == math.inf and learner.sac.cfg.alpha_max == math.inf
    with torch.no_grad():
        learner.sac.log_alpha.fill_(1.0)
    learner.sac._alpha = learner.sac._current_alpha()
    assert float(learner.alpha) == pytest.approx(math.e)  # exp(1) > 1: no clamp at 1 (combo.md §5 #2)
    lag = make(num_repeat=2, lagrange=True, lagrange_threshold=10.0)
    before = float(lag.log_cql_alpha.detach())
    metrics = lag.update(make_batch())
    assert "cql_alpha" in metrics and float(metrics["cql_alpha"]) == pytest.approx(math.exp(before))
    # the conservative gap starts well below τ_L = 10, so α' is pushed down
    assert float(lag.log_cql_alpha.detach()) < before


def test_combo_recipe_resolves_the_published_defaults() -> None:
    cfg = resolve("combo", task="hopper-medium-v2")
    lc = cfg.learner.cfg
    assert cfg.learner.name == "cql" and lc.cql_weight == 5.0 and cfg.rollout.horizon == 5
    assert lc.hidden == [256, 256, 256] and lc.alpha_max == math.inf and lc.deterministic_backup
    assert lc.lse_layout == "correct" and lc.rho == "mix" and lc.num_repeat == 10 and lc.actor_schedule == "cosine"
    assert cfg.batch.real_ratio == 0.5 and cfg.penalty.name == "none" and cfg.data.loader == "olk"
    assert resolve("combo", task="walker2d-medium-v2").rollout.horizon == 1
    assert resolve("combo", task="hopper-random-v2").learner.cfg.cql_weight == 0.5
    assert resolve("combo", overrides=["learner.lse_layout=olk_bug"]).learner.cfg.lse_layout == "olk_bug"
    # the same ensemble as MOPO's and MBPO's: one pretraining shared per (task, seed)
    assert cfg.dynamics.as_dict() == resolve("mopo", task="hopper-medium-v2").dynamics.as_dict()
    assert cfg.data == resolve("mopo", task="hopper-medium-v2").data


def test_bad_cql_keys_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="lse_layout"):
        make(lse_layout="buggy")
    with pytest.raises(ValueError, match="rho"):
        make(rho="real")
    with pytest.raises(ConfigKeyError, match="cql_weight"):
        resolve("combo", overrides=["learner.cql_weight=\"big\""])
