"""Model diagnostics (issue 12, item 6): the k-step open-loop error against a hand computation on a linear
system, the trajectory windows it uses, the penalty ranking, and that a run computes the same policy with them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures import HopperShapedTask
from zoo.config import resolve
from zoo.data.transitions import Transitions
from zoo.engine.diagnostics import (
    KS,
    ModelDiagnostics,
    one_step_error,
    open_loop_error,
    spearman,
    window_starts,
)
from zoo.engine.trainer import Trainer
from zoo.protocols import Context

A_TRUE = np.array([[0.9, 0.1], [-0.2, 0.95]])
B_TRUE = np.array([[0.5], [0.1]])
LENGTH = 15  # rows per trajectory


def linear_dataset() -> Transitions:
    """Three trajectories of s' = A s + B a, r = s₀: the first ends in a terminal, the second with neither flag
    (the third starts elsewhere: a break in continuity), the third in a timeout."""
    rng = np.random.default_rng(0)
    obs, act, nxt, term, tout = [], [], [], [], []
    for traj in range(3):
        s = rng.normal(size=2)
        for t in range(LENGTH):
            a = rng.uniform(-1, 1, size=1)
            s_next = A_TRUE @ s + B_TRUE @ a
            obs.append(s)
            act.append(a)
            nxt.append(s_next)
            term.append(float(traj == 0 and t == LENGTH - 1))
            tout.append(float(traj == 2 and t == LENGTH - 1))
            s = s_next
    obs_a = np.array(obs)
    return Transitions.from_numpy(
        obs=obs_a, act=np.array(act), reward=obs_a[:, 0], next_obs=np.array(nxt), terminal=np.array(term),
        timeout=np.array(tout),
    )


class LinearEnsemble:
    """Three linear members predicting y = [s' − s, r] = [(A_e − I) s + B_e a, c_e·s₀]; members 0 and 2 are elites."""

    def __init__(self) -> None:
        self.A = np.stack([A_TRUE + 0.05, A_TRUE - 0.3, A_TRUE * 0.9])
        self.B = np.stack([B_TRUE * 1.2, B_TRUE * 3.0, B_TRUE * 0.8])
        self.c = np.array([1.1, 0.0, 0.7])
        self.elites = torch.tensor([0, 2])

    def __call__(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        A = torch.tensor(self.A - np.eye(2), dtype=torch.float32)
        B = torch.tensor(self.B, dtype=torch.float32)
        delta = torch.einsum("eij,bj->ebi", A, obs) + torch.einsum("eij,bj->ebi", B, act)
        reward = torch.tensor(self.c, dtype=torch.float32)[:, None, None] * obs[None, :, :1]
        mean = torch.cat([delta, reward], dim=-1)
        return mean, torch.zeros_like(mean)


def test_windows_stay_inside_one_trajectory() -> None:
    data = linear_dataset()
    starts = window_starts(data, 10).tolist()
    # rows i … i+9 inside one trajectory of 15 rows: starts 0…5 of each
    assert starts == [t * LENGTH + i for t in range(3) for i in range(6)]
    assert window_starts(data, 1).tolist() == list(range(3 * LENGTH))
    assert window_starts(data.select(slice(0, 5)), 10).numel() == 0


def test_k_step_open_loop_error_matches_a_hand_computation() -> None:
    data = linear_dataset()
    model = LinearEnsemble()
    obs, act, nxt = (getattr(data, k).double().numpy() for k in ("obs", "act", "next_obs"))
    sigma = obs.std(0)
    a_bar = model.A[[0, 2]].mean(0)  # the elite mean of linear members is the mean map
    b_bar = model.B[[0, 2]].mean(0)
    starts = window_starts(data, 10)
    expected = {}
    for k in KS:
        errors = []
        for i in starts.tolist():
            s = obs[i]
            for j in range(k):
                s = a_bar @ s + b_bar @ act[i + j]
            errors.append(((s - nxt[i + k - 1]) / sigma) ** 2)
        expected[k] = float(np.mean(errors))
    got = open_loop_error(model, data, starts, KS, data.obs.std(0, unbiased=False))
    assert set(got) == set(KS)
    for k in KS:
        assert got[k] == pytest.approx(expected[k], rel=1e-4)
    assert expected[1] < expected[5] < expected[10]  # errors compound along the open loop


def test_one_step_error_and_the_penalty_ranking() -> None:
    data = linear_dataset()
    model = LinearEnsemble()
    rows = torch.arange(0, 3 * LENGTH, 2)
    y = torch.cat([data.next_obs - data.obs, data.reward], dim=-1).double().numpy()
    scale = y.std(0)
    a_bar, b_bar, c_bar = model.A[[0, 2]].mean(0), model.B[[0, 2]].mean(0), model.c[[0, 2]].mean()
    obs, act = data.obs.double().numpy(), data.act.double().numpy()
    pred = np.concatenate([obs @ (a_bar - np.eye(2)).T + act @ b_bar.T, c_bar * obs[:, :1]], axis=1)
    expected = (((pred - y) / scale) ** 2).mean(1)[rows.numpy()]
    got = one_step_error(model, data, rows, torch.tensor(scale, dtype=torch.float32))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4)

    class OraclePenalty:
        """Target stage: the row's own one-step error (sign +1), or its negative."""

        stage = "target"

        def __init__(self, sign: float) -> None:
            self.sign = sign

        def __call__(self, batch, learner, ctx):  # noqa: ANN001, ANN204
            y = torch.cat([batch.next_obs - batch.obs, batch.reward], dim=-1)
            from zoo.engine.diagnostics import elite_mean

            return self.sign * ((elite_mean(ctx.model, batch.obs, batch.act) - y) / diag.target_scale).pow(2).mean(
                -1, keepdim=True
            ) * batch.is_model

    diag = ModelDiagnostics.prepare(data, seed=0, holdout_rows=rows.tolist())
    assert diag.rows.tolist() == rows.tolist()
    assert diag.starts.tolist() == [0, 2, 4, 16, 18, 20, 30, 32, 34]  # windows that start at held-out rows
    ctx = Context(data=data, model=model, learner=None, termination=None, normalizer=None,
                  device=torch.device("cpu"), generator=torch.Generator())
    for sign in (1.0, -1.0):
        values = diag.measure(model, OraclePenalty(sign), ctx)
        assert values["model/penalty_spearman"] == pytest.approx(sign)
        assert values["model/kstep_1"] > 0 and values["model/rows"] == len(rows) and values["model/held_out"] == 1.0
    assert ModelDiagnostics.prepare(data, seed=0, holdout_rows=None).held_out is False  # unknown: any rows


def test_spearman_against_hand_ranks() -> None:
    # ranks with ties: x -> [1, 2.5, 2.5, 4], y -> [2, 1, 3.5, 3.5]; Pearson of the ranks = 2.25 / 4.5
    assert spearman(np.array([1.0, 2.0, 2.0, 5.0]), np.array([3.0, 1.0, 4.0, 4.0])) == pytest.approx(0.5)
    assert spearman(np.arange(6.0), np.arange(6.0) ** 3) == pytest.approx(1.0)
    assert spearman(np.arange(6.0), -np.exp(np.arange(6.0))) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(4), np.arange(4.0)))


def chained_rows(n: int, episode: int = 50, seed: int = 0) -> Transitions:
    """Hopper-shaped rows in trajectories (next_obs of a row is the next row's obs; a timeout every ``episode``)."""
    rng = np.random.default_rng(seed)
    obs = np.empty((n + 1, 11))
    obs[0] = rng.normal(0, 0.1, 11)
    obs[0, 0] += 1.25
    for i in range(n):
        obs[i + 1] = obs[i] + 0.01 * rng.normal(size=11) if (i + 1) % episode else obs[0]
    timeout = np.array([float((i + 1) % episode == 0) for i in range(n)])
    next_obs = np.where(timeout[:, None] > 0, obs[1:] + 0.01, obs[1:])
    return Transitions.from_numpy(
        obs=obs[:-1], act=rng.uniform(-1, 1, (n, 3)), reward=rng.normal(1, 0.1, n), next_obs=next_obs,
        terminal=np.zeros(n), timeout=timeout,
    )


TINY_ROMI = [
    "steps=12", "log_every=6", "checkpoint_every=0", "eval.episodes=0", 'device="cpu"',
    "dynamics.hidden=[32, 32]", "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]", "dynamics.max_epochs=1",
    "learner.hidden=[32, 32]", "rollout.every=6", "rollout.batch=64", "rule.every=6", "rule.iterations=2",
    "penalty.name=mopo",
]


def run_records(tmp_path: Path, name: str, diagnostics: bool) -> tuple[list[dict], Trainer]:
    torch.manual_seed(0)
    cfg = resolve("romi", overrides=TINY_ROMI)
    trainer = Trainer(cfg, HopperShapedTask(), tmp_path / name, tmp_path / "cache", progress=False,
                      data=chained_rows(1000), diagnostics=diagnostics)
    trainer.setup()
    trainer.train()
    lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], trainer


def test_a_run_logs_diagnostics_after_pretraining_and_each_rule_phase_and_trains_the_same(tmp_path: Path) -> None:
    with_diag, trainer = run_records(tmp_path, "on", diagnostics=True)
    without, _ = run_records(tmp_path, "off", diagnostics=False)
    model = [r for r in with_diag if r["kind"] == "model"]
    assert [r["step"] for r in model] == [0, 6, 12]  # after pretraining, after each of the 2 rule phases
    for r in model:
        assert {f"model/kstep_{k}" for k in KS} <= set(r) and -1.0 <= r["model/penalty_spearman"] <= 1.0
        assert r["model/windows"] > 0 and r["model/held_out"] == 1.0  # the ensemble's fit recorded its holdout
    assert model == trainer.diagnostics
    assert (tmp_path / "on" / "model_diagnostics.png").stat().st_size > 1000
    assert not (tmp_path / "off" / "model_diagnostics.png").exists()

    def strip(records: list[dict]) -> list[dict]:
        timing = ("sps", "pretrain/cached")
        return [{k: v for k, v in r.items() if k not in timing and "time" not in k and "wall" not in k}
                for r in records if r["kind"] != "model"]

    assert strip(with_diag) == strip(without)  # the diagnostics never touch the run's random streams


def test_a_resumed_run_keeps_the_diagnostics_before_its_stop(tmp_path: Path) -> None:
    from zoo.engine.trainer import TrainingInterrupted

    cfg = resolve("romi", overrides=TINY_ROMI)
    first = Trainer(cfg, HopperShapedTask(), tmp_path / "run", tmp_path / "cache", progress=False,
                    data=chained_rows(1000))
    first.setup()
    update = first.rule.update

    def update_then_stop(ctx):  # noqa: ANN001, ANN202 (as a Ctrl-C during the first rule phase)
        first._stop_requested = True
        return update(ctx)

    first.rule.update = update_then_stop  # type: ignore[method-assign]
    with pytest.raises(TrainingInterrupted):
        first.train()
    assert [r["step"] for r in first.diagnostics] == [0, 6]
    second = Trainer(cfg, HopperShapedTask(), tmp_path / "run", tmp_path / "cache", progress=False,
                     data=chained_rows(1000))
    second.setup()
    second.train(resume=True)
    assert [r["step"] for r in second.diagnostics] == [0, 6, 12]
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "model"] == [0, 6, 12]
