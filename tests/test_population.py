"""Populations (issue 15): P runs of one recipe trained as one batched program.

The contract: member k of a population computes what the single run of its seed and config computes. Batched and
single reductions (a [P·N, B, ·] baddbmm against an [N, B, ·] one, a loss summed over P members) may differ in the
last bits, and training carries such differences along; after 50 steps the parameters agree to a few 1e-8 in
practice. The tolerance below, 1e-5 absolute on every parameter, is far above that and far below any real
difference: a member that drew one different random number, or got one extra Adam step, is off by 1e-3 or more
(``test_the_comparison_sees_a_different_random_stream``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.fixtures import HopperShapedTask, hopper_shaped_rows
from zoo.config import resolve
from zoo.engine.population import check_population, population_support
from zoo.engine.rollout import DivergenceError
from zoo.engine.trainer import Trainer, TrainingInterrupted

TOL = 1e-5

TINY = [
    "steps=50",
    "log_every=25",
    "checkpoint_every=0",
    "eval.episodes=0",
    'device="cpu"',
    "dynamics.hidden=[16, 16]",
    "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]",
    "dynamics.max_epochs=1",
    "learner.hidden=[16, 16]",
    "rollout.every=25",
    "rollout.batch=32",
    "batch.size=32",
]
# What each recipe needs on top of TINY to exercise its own parts within 50 steps (ROMI: two model phases).
RECIPE_EXTRA = {
    "romi": ["rule.every=20", "rule.iterations=3", "rule.batch_size=16", "rule.weight_hidden=[16]"],
    "mobile": ["penalty.samples=2"],
    "rambo": ["rule.every=20", "rule.adv_steps=3", "rule.bc_epochs=2", "rule.batch_size=16", "rule.monitor_rows=16"],
    "combo": ["learner.num_repeat=2", "learner.lagrange=true"],  # the Lagrange form: α' per run too
}
SUPPORTED = ("mbpo", "mopo", "mobile", "morel", "romi", "combo", "rambo", "mopo+td3bc")
UNSUPPORTED = ("rombrl",)

DATA = hopper_shaped_rows(500)


# A learner no recipe uses, on a recipe's other components: "recipe+learner".
LEARNER_SWAP = {"mopo+td3bc": ["learner.name=td3bc"]}


def _cfg(algo: str, seed: int, *extra: str) -> Any:
    recipe = algo.split("+")[0]
    first = LEARNER_SWAP.get(algo, [])  # a component swap comes first: it resets that component's keys
    return resolve(recipe, overrides=[*first, *TINY, *RECIPE_EXTRA.get(algo, []), *extra, f"seed={seed}"])


def _trainer(cfgs: list[Any], root: Path, names: list[str]) -> Trainer:
    trainer = Trainer(
        cfgs, HopperShapedTask(), [root / n for n in names], root.parent / "cache", progress=False, data=DATA
    )
    trainer.setup()
    return trainer


def _member_params(trainer: Trainer, k: int) -> dict[str, torch.Tensor]:
    """Run k's learner parameters (single-run layout) and its model's parameters."""
    learner = trainer.learner.member_state_dict(k) if trainer.batched else trainer.learner.state_dict()
    sac = learner.get("sac", learner)  # COMBO's learner composes a SAC
    out = {f"{sect}.{name}": v for sect in ("actor", "critic", "critic_target") for name, v in sac[sect].items()}
    out.update({f"actor_target.{n}": v for n, v in sac.get("actor_target", {}).items()})  # TD3+BC
    out.update({name: v.reshape(-1) for name, v in learner.items() if name in ("log_alpha", "log_cql_alpha")})
    if "log_alpha" in sac:
        out["sac.log_alpha"] = sac["log_alpha"].reshape(-1)
    model = trainer.members[k].model
    if model is not None:
        out.update({f"model.{name}": v for name, v in model.state_dict().items()})
    return out


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def _train_lines(run_dir: Path) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "sps"} for r in lines if r["kind"] == "train"]


def _assert_lines_close(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys()
        for key, va in ra.items():
            if isinstance(va, str):
                assert va == rb[key], key
            else:
                assert va == pytest.approx(rb[key], rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("algo", SUPPORTED)
def test_a_member_equals_the_single_run_of_its_seed(algo: str, tmp_path: Path) -> None:
    seeds = [0, 1, 2]
    cfgs = [_cfg(algo, s) for s in seeds]
    pop = _trainer(cfgs, tmp_path / "pop", [f"seed{s}" for s in seeds])
    assert pop.batched and population_support(cfgs[0]) == (True, "")
    outcomes = pop.train_members()
    assert all(isinstance(o, dict) and o["steps"] == 50 and o["population"] == 3 for o in outcomes)
    for k, seed in enumerate(seeds):
        single = _trainer([cfgs[k]], tmp_path / "single", [f"seed{seed}"])
        single.train()
        assert _max_diff(_member_params(pop, k), _member_params(single, 0)) < TOL, (algo, seed)
        name = f"seed{seed}"
        _assert_lines_close(_train_lines(tmp_path / "pop" / name), _train_lines(tmp_path / "single" / name))
    # the members did not all compute the same thing
    assert _max_diff(_member_params(pop, 0), _member_params(pop, 1)) > 1e-2


def test_the_comparison_sees_a_different_random_stream(tmp_path: Path) -> None:
    """The tolerance is meaningful: one extra draw from a member's learner generator moves it far beyond TOL."""
    cfg = _cfg("mopo", 0)
    a = _trainer([cfg], tmp_path / "a", ["run"])
    a.train()
    b = _trainer([cfg], tmp_path / "b", ["run"])
    torch.randn(1, generator=b.members[0].learner_generator)
    b.train()
    assert _max_diff(_member_params(a, 0), _member_params(b, 0)) > 100 * TOL


def test_population_keys_may_differ_between_members(tmp_path: Path) -> None:
    """penalty.coef (each run's own penalty), learner.tau, learner.gamma (per-run scalars of the batched update) and
    the learning rates (zoo.learners.sac.RunRates), with the cosine schedule of the actor's."""
    extras = [
        ["penalty.coef=0.5", "learner.tau=0.005", "learner.gamma=0.99", "learner.actor_lr=1e-4"],
        ["penalty.coef=3.0", "learner.tau=0.02", "learner.gamma=0.9", "learner.actor_lr=1e-3",
         "learner.critic_lr=1e-3", "learner.alpha_lr=3e-4", "learner.actor_schedule=cosine"],
    ]
    cfgs = [_cfg("mopo", s, *extra) for s, extra in zip((0, 1), extras, strict=True)]
    assert cfgs[0].hash() != cfgs[1].hash()
    pop = _trainer(cfgs, tmp_path / "pop", ["a", "b"])
    pop.train_members()
    for k, name in enumerate(("a", "b")):
        single = _trainer([cfgs[k]], tmp_path / "single", [name])
        single.train()
        assert _max_diff(_member_params(pop, k), _member_params(single, 0)) < TOL, name


@pytest.mark.parametrize(
    ("override", "key"),
    [("learner.hidden=[8, 8]", "learner.hidden"), ("learner.actor_schedule=none", "learner.actor_schedule"),
     ("rollout.horizon=2", "rollout.horizon"), ("penalty.mode=ensemble_std", "penalty.mode")],
)
def test_structural_keys_split_populations(override: str, key: str) -> None:
    with pytest.raises(ValueError, match=re.escape(key) + " .* differs"):
        check_population([_cfg("mopo", 0), _cfg("mopo", 1, override)])


def test_a_population_holds_each_run_once() -> None:
    """Seeds may repeat across configs that differ in population-able keys (a sweep point each); a run may not."""
    check_population([_cfg("mopo", s, f"learner.gamma={g}") for g in (0.99, 0.98) for s in (0, 1)])
    with pytest.raises(ValueError, match="the same run twice"):
        check_population([_cfg("mopo", 0), _cfg("mopo", 1), _cfg("mopo", 0)])


@pytest.mark.parametrize("algo", UNSUPPORTED)
def test_components_without_support_run_as_populations_of_one(algo: str, tmp_path: Path) -> None:
    ok, why = population_support(_cfg(algo, 0))
    assert not ok and "no population support" in why
    with pytest.raises(ValueError, match="no population support"):
        Trainer([_cfg(algo, 0), _cfg(algo, 1)], HopperShapedTask(), [tmp_path / "a", tmp_path / "b"], tmp_path)
    Trainer([_cfg(algo, 0)], HopperShapedTask(), [tmp_path / "a"], tmp_path)  # a population of one is any run


def _poison_member(trainer: Trainer, k: int, at_step: int) -> None:
    """Make run k diverge: its critics' weights become NaN after update ``at_step``."""
    update = trainer.learner.update_pop
    n = trainer.cfg.learner.cfg.num_critics

    def update_then_poison(*args: Any, **kwargs: Any) -> Any:
        out = update(*args, **kwargs)
        if trainer.step + 1 == at_step:
            with torch.no_grad():
                trainer.learner.critic.layers[0].weight[k * n : (k + 1) * n] = math.nan
        return out

    trainer.learner.update_pop = update_then_poison  # type: ignore[method-assign]


def test_a_diverging_member_stops_alone(tmp_path: Path) -> None:
    extra = ["checkpoint_every=10", "log_every=25"]
    cfgs = [_cfg("mopo", s, *extra) for s in (0, 1, 2)]
    pop = _trainer(cfgs, tmp_path / "pop", ["s0", "s1", "s2"])
    _poison_member(pop, 1, at_step=17)
    outcomes = pop.train_members()
    assert isinstance(outcomes[1], DivergenceError) and "non-finite" in str(outcomes[1])
    assert isinstance(outcomes[0], dict) and isinstance(outcomes[2], dict)
    # its last good checkpoint is kept: step 10 (step 20's was refused, its metrics were not finite)
    assert torch.load(tmp_path / "pop" / "s1" / "checkpoints" / "last.pt", weights_only=False)["step"] == 10
    assert torch.load(tmp_path / "pop" / "s0" / "checkpoints" / "last.pt", weights_only=False)["step"] == 50
    lines = _train_lines(tmp_path / "pop" / "s1")
    assert [r["step"] for r in lines] == [25]  # nothing is logged for it after the stop
    # the others finish with the results of a population without it
    without = _trainer([cfgs[0], cfgs[2]], tmp_path / "without", ["s0", "s2"])
    without.train_members()
    for k_pop, k_without in ((0, 0), (2, 1)):
        assert _max_diff(_member_params(pop, k_pop), _member_params(without, k_without)) < TOL
    assert pop.learner.critic.layers[0].weight[:2].isfinite().all()


def test_a_population_stops_on_ctrl_c_and_resumes_exactly(tmp_path: Path) -> None:
    cfgs = [_cfg("mopo", 0), _cfg("mopo", 1, "learner.critic_lr=1e-3")]  # per-run rates survive the resume too
    whole = _trainer(cfgs, tmp_path / "whole", ["s0", "s1"])
    whole.train_members()

    first = _trainer(cfgs, tmp_path / "split", ["s0", "s1"])
    update = first.learner.update_pop

    def update_then_stop(*args: Any, **kwargs: Any) -> Any:
        out = update(*args, **kwargs)
        if first.step + 1 == 30:
            first._stop_requested = True  # what the Ctrl-C handler sets
        return out

    first.learner.update_pop = update_then_stop  # type: ignore[method-assign]
    with pytest.raises(TrainingInterrupted, match="stopped at step 30"):
        first.train_members()
    for name in ("s0", "s1"):
        assert torch.load(tmp_path / "split" / name / "checkpoints" / "last.pt", weights_only=False)["step"] == 30
    resumed = _trainer(cfgs, tmp_path / "split", ["s0", "s1"])
    resumed.train_members(resume=True)
    for k, name in enumerate(("s0", "s1")):
        assert _max_diff(_member_params(whole, k), _member_params(resumed, k)) == 0.0
        assert _train_lines(tmp_path / "split" / name) == _train_lines(tmp_path / "whole" / name)


def test_a_member_checkpoint_resumes_as_a_single_run(tmp_path: Path) -> None:
    """A member's checkpoint has the single-run format (its own learning rates included): the single run of its seed
    resumes from it."""
    cfgs = [_cfg("mopo", 0, "learner.critic_lr=3e-4"), _cfg("mopo", 1, "learner.critic_lr=1e-3")]
    pop = _trainer(cfgs, tmp_path / "pop", ["s0", "s1"])
    update = pop.learner.update_pop

    def update_then_stop(*args: Any, **kwargs: Any) -> Any:
        out = update(*args, **kwargs)
        if pop.step + 1 == 30:
            pop._stop_requested = True
        return out

    pop.learner.update_pop = update_then_stop  # type: ignore[method-assign]
    with pytest.raises(TrainingInterrupted):
        pop.train_members()
    state = torch.load(tmp_path / "pop" / "s1" / "checkpoints" / "last.pt", weights_only=False)
    assert state["learner"]["critic_optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    alone = _trainer([cfgs[1]], tmp_path / "pop", ["s1"])
    alone.train(resume=True)
    straight = _trainer([cfgs[1]], tmp_path / "straight", ["s1"])
    straight.train()
    assert _max_diff(_member_params(alone, 0), _member_params(straight, 0)) < TOL


def test_a_population_refuses_checkpoints_at_different_steps(tmp_path: Path) -> None:
    cfgs = [_cfg("mopo", s, "checkpoint_every=10") for s in (0, 1)]
    single = _trainer([cfgs[0]], tmp_path / "runs", ["s0"])
    single.train()  # s0 has a checkpoint at step 50, s1 none
    pop = _trainer(cfgs, tmp_path / "runs", ["s0", "s1"])
    with pytest.raises(RuntimeError, match=r"cannot resume this population: .*s1.*missing"):
        pop.train_members(resume=True)
