"""The quick suite end to end (``slow`` tier): the four Pendulum datasets collected from one online SAC run
(collection protocol 2: sampled medium/expert actions with their log-probabilities), and MOPO, ROMI, COMBO and
MOReL trained offline on pendulum-medium under the quick preset beating uniform random actions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from zoo.data.behaviour import behaviour_run, medium_checkpoint, random_return
from zoo.engine.run import train_run
from zoo.tasks.references import PENDULUM_EXPERT_RETURN, PENDULUM_RANDOM_RETURN, normalized_score
from zoo.tasks.task import get_task

pytestmark = pytest.mark.slow

QUICK = ["pendulum-random", "pendulum-medium", "pendulum-medium-replay", "pendulum-expert"]


@pytest.fixture(scope="module")
def quick_datasets(quick_data_dir: Path) -> dict:
    return {name: get_task(name).load() for name in QUICK}


def test_qualities_are_ordered_and_the_expert_matches_its_reference(quick_datasets: dict) -> None:
    mean = {name: float(d.episode_returns().mean()) for name, d in quick_datasets.items()}
    assert mean["pendulum-random"] < mean["pendulum-medium"] < mean["pendulum-expert"]
    # The reference constant was measured from exactly this collection (100 episodes, seeds 0..99).
    assert mean["pendulum-expert"] == pytest.approx(PENDULUM_EXPERT_RETURN, abs=15.0)
    assert mean["pendulum-random"] == pytest.approx(PENDULUM_RANDOM_RETURN, abs=60.0)
    assert {len(d) for n, d in quick_datasets.items() if n != "pendulum-medium-replay"} == {20_000}
    assert all(d.terminal.sum() == 0 for d in quick_datasets.values())  # Pendulum never terminates


@pytest.mark.parametrize("quality", ["medium", "expert"])
def test_medium_and_expert_data_carry_action_spread_and_their_log_probs(quality: str, quick_datasets: dict) -> None:
    """Collection protocol 2 (zoo.data.behaviour): the actions are samples of the behaviour policy, not its
    mean action, and the stored log π(a|s) is that policy's density of each stored action."""
    import minari
    import torch

    from zoo.data.behaviour import quality_policy
    from zoo.data.collect import COLLECTION_PROTOCOL, local_root, minari_datasets_path

    data = quick_datasets[f"pendulum-{quality}"]
    assert data.meta["collection_protocol"] == COLLECTION_PROTOCOL == 2
    policy = quality_policy("Pendulum-v1", quality)
    with minari_datasets_path(local_root()):
        episodes = minari.load_dataset(get_task(f"pendulum-{quality}").dataset_id).iterate_episodes()
        log_probs = torch.as_tensor(np.concatenate([np.asarray(ep.infos["action_log_probs"]) for ep in episodes]))
    assert log_probs.shape == (len(data),)
    with torch.no_grad():
        mu, log_std = policy.actor(data.obs)
        scale = policy.actor.act_scale
        spread = (data.act - scale * torch.tanh(mu)).abs().mean()
        inside = (data.act.abs() < 0.999 * scale)[:, 0]
        expected = policy.actor.log_prob(data.obs[inside], torch.atanh(data.act[inside].double() / scale).float())
    assert float(spread) > 0.2 * float(log_std.exp().mean()) and float(spread) > 0.1, float(spread)
    assert float(inside.float().mean()) > 0.95
    torch.testing.assert_close(log_probs[inside].float(), expected[:, 0], rtol=1e-3, atol=2e-3)


def test_the_expert_reference_is_the_final_policy_acting_deterministically(quick_datasets: dict) -> None:
    from zoo.data.behaviour import expert_return

    assert expert_return("Pendulum-v1") == pytest.approx(PENDULUM_EXPERT_RETURN, abs=1e-3)


def test_medium_is_the_one_third_checkpoint_and_replay_stops_there(quick_datasets: dict) -> None:
    run = behaviour_run("Pendulum-v1", 0)
    rand, expert = random_return("Pendulum-v1"), run.checkpoints[-1].eval_return
    chosen = medium_checkpoint(run, rand)
    target = rand + (expert - rand) / 3
    assert all(abs(chosen.eval_return - target) <= abs(c.eval_return - target) for c in run.checkpoints)
    replay = quick_datasets["pendulum-medium-replay"]
    episodes_before = sum(1 for end in run.episode_end_steps if end <= chosen.step)
    assert int(replay.episode_ends().sum()) == episodes_before
    assert len(replay) == 200 * episodes_before  # whole 200-step episodes


@pytest.mark.parametrize("algo", ["mopo", "romi", "combo", "morel"])
def test_the_quick_preset_beats_random_actions_on_pendulum_medium(
    algo: str, quick_datasets: dict, tmp_path: Path
) -> None:
    """The learning claim of the no-argument ``zoo bench`` (configs/presets/quick.toml), for a penalty recipe, a
    rule recipe, the conservative learner (combo) and the deterministic ensemble with halting (morel). Uniform
    random actions score 0 by construction (R_min is their measured mean return); one 10-episode evaluation of them
    spreads by about ±9 points and the final score averages 3 of them, so 20 points is clearly better."""
    from zoo.bench.presets import load_bench_preset

    preset = load_bench_preset("quick")
    result = train_run(
        algo, "pendulum-medium", seed=0, out=tmp_path, preset=preset.layer(algo), suite="quick", progress=False
    )
    random_score = float(normalized_score("pendulum-medium", PENDULUM_RANDOM_RETURN))
    assert random_score == pytest.approx(0.0)
    assert result["steps"] == preset.layer(algo)["steps"] and result["score_evals"] == 3
    assert np.isfinite(result["score"])
    assert result["score"] > random_score + 20.0, result

