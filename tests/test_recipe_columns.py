"""Recipes default to the behaviour of the code behind their published columns, with our variant one --set away
(issue 14, item 5)."""

from __future__ import annotations

import math

import pytest

from zoo.config import resolve


@pytest.mark.parametrize("algo", ["mobile", "rombrl"])
def test_the_target_clamp_stays_on_halfcheetah_random(algo: str) -> None:
    assert resolve(algo, task="halfcheetah-random-v2").learner.cfg.target_min == 0.0
    ours = resolve(algo, task="halfcheetah-random-v2", overrides=["learner.target_min=-inf"])
    assert ours.learner.cfg.target_min == -math.inf
    assert resolve(algo, task="pendulum-medium").learner.cfg.target_min == -math.inf  # not a published column


@pytest.mark.parametrize(
    ("algo", "loader"),
    [("mopo", "olk"), ("mbpo", "olk"), ("mobile", "olk"), ("rambo", "olk"), ("combo", "olk"),
     ("romi", "d4rl_qlearning"), ("rombrl", "keep_timeouts"), ("morel", "keep_timeouts")],
)
def test_loader_defaults_follow_the_code_behind_the_column(algo: str, loader: str) -> None:
    assert resolve(algo, task="hopper-medium-v2").data.loader == loader
    assert resolve(algo, overrides=["data.loader=keep_timeouts"]).data.loader == "keep_timeouts"


def test_rambo_warm_start_is_unshuffled_by_default() -> None:
    assert resolve("rambo", task="hopper-medium-v2").rule.cfg.bc_shuffle is False
    assert resolve("rambo", overrides=["rule.bc_shuffle=true"]).rule.cfg.bc_shuffle is True


def test_mopo_mbpo_and_combo_still_share_one_pretrained_ensemble() -> None:
    from zoo.engine.pretrain import pretrain_key

    keys = {
        pretrain_key("fingerprint", cfg.dynamics, cfg.data.normalize_obs, 0, "cpu")
        for cfg in (resolve(a, task="hopper-medium-v2") for a in ("mopo", "mbpo", "combo"))
    }
    assert len(keys) == 1 and len({resolve(a).data.loader for a in ("mopo", "mbpo", "combo")}) == 1
