"""One contract test per component kind: every registered component (plugins included) against its protocol
in ``zoo/protocols.py`` — shapes, dtypes, device, gradients where promised, state-dict round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data.transitions import Transitions
from zoo.protocols import TENSOR_FIELDS, Batch, Context, EnvSpec, ModelStep, Rule
from zoo.registry import REGISTRY

SPEC = EnvSpec(obs_dim=4, act_dim=2)
DEVICE = torch.device("cpu")
B = 16


def small_cfg(kind: str, name: str, **extra: object) -> dict:
    """Default config, shrunk where the component has the usual size keys (fast contract checks)."""
    keys = set(REGISTRY.config_keys(kind, name))
    cfg: dict = {}
    if kind == "dynamics":
        if "hidden" in keys:
            cfg["hidden"] = [16, 16]
        if "weight_decay" in keys:
            cfg["weight_decay"] = [1e-5, 1e-5, 1e-5]
        if "max_epochs" in keys:
            cfg["max_epochs"] = 2
    if kind == "learner" and "hidden" in keys:
        cfg["hidden"] = [16, 16]
    if kind == "rule":  # short model phases and warm starts (the hooks' contract does not depend on their length)
        cfg.update({k: v for k, v in {"adv_steps": 20, "bc_epochs": 2}.items() if k in keys})
    if kind == "rule" and name == "romi":  # one model phase of 20 iterations instead of 1000
        cfg["iterations"] = 20
    if kind == "rule" and name == "rombrl":  # a 16 × 8 on-policy rollout and one follower epoch per round
        cfg.update(num_rollouts=16, rollout_horizon=8, follower_epochs=1)
    cfg.update({k: v for k, v in extra.items() if k in keys})
    return cfg


def dataset(n: int = 256, seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, SPEC.obs_dim))
    act = rng.uniform(-1, 1, size=(n, SPEC.act_dim))
    return Transitions.from_numpy(
        obs=obs, act=act, reward=obs[:, 0] - act[:, 0] ** 2, next_obs=obs + 0.1 * np.tanh(act).sum(1, keepdims=True),
        terminal=np.zeros(n), timeout=np.zeros(n),
    )


def batch(n: int = B) -> Batch:
    g = torch.Generator().manual_seed(1)
    return Batch(
        obs=torch.randn(n, SPEC.obs_dim, generator=g),
        act=torch.rand(n, SPEC.act_dim, generator=g) * 2 - 1,
        reward=torch.randn(n, 1, generator=g),
        next_obs=torch.randn(n, SPEC.obs_dim, generator=g),
        terminal=torch.zeros(n, 1),
        is_model=torch.cat([torch.zeros(n // 4, 1), torch.ones(n - n // 4, 1)]),
        n_real=n // 4,  # as the trainer's batches say where their model rows start
    )


def fitted_model(name: str = "gaussian_ensemble"):
    torch.manual_seed(0)
    model = REGISTRY.create("dynamics", name, SPEC, DEVICE, **small_cfg("dynamics", name))
    model.fit(dataset(), generator=torch.Generator().manual_seed(0))
    return model


def learner(name: str = "sac"):
    torch.manual_seed(0)
    return REGISTRY.create("learner", name, SPEC, DEVICE, **small_cfg("learner", name))


def context(model, learn) -> Context:
    data = dataset()
    return Context(
        data=data, model=model, learner=learn, termination=lambda o, a, o2: torch.zeros(o.shape[0], 1),
        normalizer=None, device=DEVICE, generator=torch.Generator().manual_seed(0), step=0, spec=SPEC,
    )


@pytest.mark.parametrize("name", REGISTRY.names("dynamics"))
def test_dynamics_contract(name: str) -> None:
    model = fitted_model(name)
    obs, act = batch().obs, batch().act
    mean, logvar = model.forward(obs, act)
    e = mean.shape[0]
    d = SPEC.obs_dim + 1
    assert mean.shape == logvar.shape == (e, B, d) and mean.dtype == torch.float32
    assert mean.requires_grad  # differentiable
    step = model.step(obs, act, generator=torch.Generator().manual_seed(0))
    assert isinstance(step, ModelStep)
    assert step.next_obs.shape == (B, SPEC.obs_dim) and step.reward.shape == (B, 1) and step.terminal.shape == (B, 1)
    assert step.member.shape == (B,) and step.member.dtype == torch.long
    assert set(step.member.tolist()) <= set(model.elites.tolist())
    assert step.log_prob.shape == (B,) and not step.next_obs.requires_grad
    nxt, rew = model.sample(obs, act)
    assert nxt.shape == (e, B, SPEC.obs_dim) and rew.shape == (e, B, 1)
    nxt1, rew1 = model.sample(obs, act, member=step.member, reparam=True)
    assert nxt1.shape == (B, SPEC.obs_dim) and nxt1.requires_grad
    provides = getattr(type(model), "provides", None)
    if provides is not None and "log_prob" not in provides:  # a model without a likelihood refuses clearly
        with pytest.raises(TypeError, match="no likelihood"):
            model.log_prob(obs, act, step.next_obs, step.reward, member=step.member)
        with pytest.raises(TypeError, match="no negative log-likelihood"):
            model.nll(batch())
        _check_state_round_trip(name, model, obs, act, mean)
        return
    lp_member = model.log_prob(obs, act, step.next_obs, step.reward, member=step.member)
    lp_mix = model.log_prob(obs, act, step.next_obs, step.reward)
    assert lp_member.shape == lp_mix.shape == (B,) and torch.isfinite(lp_mix).all()
    params = [p for p in model.model_parameters() if p.requires_grad]
    grads = torch.autograd.grad(lp_mix.sum(), params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    loss = model.nll(batch())
    assert loss.dim() == 0 and torch.isfinite(loss)
    _check_state_round_trip(name, model, obs, act, mean)


def _check_state_round_trip(name: str, model, obs: torch.Tensor, act: torch.Tensor, mean: torch.Tensor) -> None:
    clone = REGISTRY.create("dynamics", name, SPEC, DEVICE, **small_cfg("dynamics", name))
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.forward(obs, act)[0], mean)
    assert torch.equal(clone.elites, model.elites)


@pytest.mark.parametrize("name", REGISTRY.names("learner"))
def test_learner_contract(name: str) -> None:
    learn = learner(name)
    b = batch()
    a, u, logp = learn.act(b.obs)
    assert a.shape == u.shape == (B, SPEC.act_dim) and logp.shape == (B, 1)
    assert (a.abs() <= SPEC.act_high + 1e-6).all()
    det1, det2 = learn.act(b.obs, deterministic=True)[0], learn.act(b.obs, deterministic=True)[0]
    assert torch.equal(det1, det2)
    lp = learn.log_prob(b.obs, u.detach())
    assert lp.shape == (B, 1)
    assert torch.autograd.grad(lp.sum(), list(learn.actor.parameters()))[0] is not None
    obs = b.obs.clone().requires_grad_(True)
    act = b.act.clone().requires_grad_(True)
    q = learn.q(obs, act, target=True)
    assert q.dim() == 3 and q.shape[1:] == (B, 1)
    g_obs, g_act = torch.autograd.grad(q.sum(), [obs, act])
    assert g_obs.abs().sum() > 0 and g_act.abs().sum() > 0
    assert learn.value(b.obs).shape == (B, 1) and learn.value(b.obs, target=True, action="sample").shape == (B, 1)
    metrics = learn.update(b)
    assert metrics and all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in metrics.values())
    assert isinstance(learn.actor_optimizer, torch.optim.Optimizer)
    clone = learner(name)
    clone.load_state_dict(learn.state_dict())
    torch.testing.assert_close(clone.act(b.obs, deterministic=True)[0], learn.act(b.obs, deterministic=True)[0])
    torch.testing.assert_close(clone.q(b.obs, b.act), learn.q(b.obs, b.act))


@pytest.mark.parametrize("name", REGISTRY.names("penalty"))
def test_penalty_contract(name: str) -> None:
    penalty = REGISTRY.create("penalty", name, **small_cfg("penalty", name))
    assert penalty.stage in ("rollout", "target")
    model, learn = fitted_model(), learner()
    ctx = context(model, learn)
    b = batch()
    if penalty.stage == "rollout":
        step = model.step(b.obs, b.act, generator=torch.Generator().manual_seed(0))
        amount = penalty(step, ctx)
    else:
        amount = penalty(b, learn, ctx)
        assert torch.all(amount[b.is_model[:, 0] == 0] == 0)  # real rows are never penalised
    assert amount.shape == (B, 1) and amount.dtype == torch.float32 and torch.isfinite(amount).all()
    assert not amount.requires_grad


@pytest.mark.parametrize("name", REGISTRY.names("rule"))
def test_rule_contract(name: str) -> None:
    rule = REGISTRY.create("rule", name, **small_cfg("rule", name))
    assert isinstance(rule, Rule) or all(hasattr(rule, h) for h in ("before_training", "on_batch", "update"))
    assert isinstance(rule.every, int) and rule.every >= 0
    model, learn = fitted_model(), learner()
    ctx = context(model, learn)
    assert isinstance(rule.before_training(ctx), dict)
    b = batch()
    out = rule.on_batch(b, ctx)
    for field in TENSOR_FIELDS:
        assert getattr(out, field).shape == getattr(b, field).shape
    assert out.n_real == b.n_real  # where the model rows start survives the rule
    if rule.every:
        assert isinstance(rule.update(ctx), dict)
    state = rule.state_dict()
    rule.load_state_dict(state)


@pytest.mark.parametrize("name", REGISTRY.names("suite"))
def test_suite_contract(name: str) -> None:
    suite = REGISTRY.create("suite", name)
    assert suite.tasks and suite.noise in ("none", "relative_delta")
