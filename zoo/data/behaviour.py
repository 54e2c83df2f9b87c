"""Behaviour policies from one online SAC run: the ``medium``, ``expert`` and ``medium-replay`` qualities.

One online SAC run per (env, seed, budget) is trained with :func:`zoo.learners.online.train_online` and
cached under ``data_dir()/behaviour``. From it (issue "Engine", item 3; our choices written here):

- ``expert``: the final policy.
- ``medium``: the checkpoint whose (deterministic) evaluation return is closest to one third of the way
  from the random return to the expert's (the final checkpoint's evaluation return); returns may be negative
  (Pendulum).
- ``medium-replay``: the replay buffer, as whole episodes, up to the step of the medium checkpoint.

The collection protocol (version 2, ``zoo.data.collect.COLLECTION_PROTOCOL``; 1 had the same rules and an older
SAC) follows D4RL's MuJoCo data:
``medium`` and ``expert`` *sample* their actions from the policy's stochastic tanh-Gaussian distribution
(D4RL generated them from its SAC policies the same way, and its files carry ``infos/action_log_probs``); the
log-probability of every action is stored with the data (Minari ``infos["action_log_probs"]``, one entry per
action). With deterministic actions in a deterministic env every visited state would carry one action, the
model would never see how actions change the dynamics, and offline policies exploit the model off the data.
``random`` stays uniform and ``medium-replay`` stays the replay buffer. The expert reference score (R_max) is
still the deterministic evaluation of the final policy (:func:`expert_return`), as in D4RL.

The random return is the reference table's measured constant where the env has one (Pendulum-v1),
otherwise it is measured with uniform random actions over 100 seeded episodes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zoo.io import atomic_torch_save
from zoo.paths import data_dir

# Online budgets per env (env steps; one SAC update per step). Pendulum-v1 is solved well within this.
BEHAVIOUR_STEPS: dict[str, int] = {"Pendulum-v1": 8_000}
BEHAVIOUR_LEARNER: dict[str, dict[str, Any]] = {"Pendulum-v1": {"hidden": [128, 128]}}
DEFAULT_STEPS = 100_000
EVAL_EVERY = 500


def behaviour_dir() -> Path:
    return data_dir() / "behaviour"


def _run_path(env_id: str, seed: int, steps: int) -> Path:
    safe = env_id.replace("/", "__")
    return behaviour_dir() / f"{safe}-sac-seed{seed}-steps{steps}.pt"


def behaviour_run(env_id: str, seed: int = 0, steps: int | None = None, progress: bool = True) -> Any:
    """The cached online SAC run for (env, seed, steps), trained on first use."""
    from zoo.learners.online import OnlineCheckpoint, OnlineRun, train_online

    steps = steps or BEHAVIOUR_STEPS.get(env_id, DEFAULT_STEPS)
    path = _run_path(env_id, seed, steps)
    if path.is_file():
        state = torch.load(path, weights_only=False)
        state["checkpoints"] = [OnlineCheckpoint(**c) for c in state["checkpoints"]]
        return OnlineRun(**state)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bitwise the same run on every machine, and fastest for these small nets
    try:
        run = train_online(
            env_id,
            steps=steps,
            seed=seed,
            learner_cfg=BEHAVIOUR_LEARNER.get(env_id),
            eval_every=EVAL_EVERY,
            eval_episodes=5,
            progress=progress,
        )
    finally:
        torch.set_num_threads(threads)
    state = {
        "env_id": run.env_id,
        "seed": run.seed,
        "spec": run.spec,
        "learner_cfg": run.learner_cfg,
        "checkpoints": [c.__dict__ for c in run.checkpoints],
        "episodes": run.episodes,
        "episode_end_steps": run.episode_end_steps,
        "steps": run.steps,
        "wall_s": run.wall_s,
    }
    atomic_torch_save(state, path)
    run.learner = None
    return run


def random_return(env_id: str) -> float:
    """R_min: the measured constant for Pendulum-v1, otherwise measured over 100 seeded random episodes."""
    from zoo.data.local_references import PENDULUM_RANDOM_RETURN, measure_random_return

    if env_id == "Pendulum-v1":
        return PENDULUM_RANDOM_RETURN
    return measure_random_return(env_id, episodes=100)


def expert_return(env_id: str, seed: int = 0, episodes: int = 100) -> float:
    """R_max: the final behaviour policy acting deterministically, episode k reset with seed k (D4RL's expert
    reference is the evaluation of its final policy, not the return of the sampled expert data)."""
    from zoo.data.local_references import measure_policy_return

    return measure_policy_return(env_id, behaviour_run(env_id, seed).policy(None), episodes=episodes)


def medium_checkpoint(run: Any, random_ret: float) -> Any:
    """The checkpoint whose return is closest to random + (expert − random)/3 (expert = final checkpoint)."""
    expert_ret = run.checkpoints[-1].eval_return
    target = random_ret + (expert_ret - random_ret) / 3.0
    return min(run.checkpoints, key=lambda c: (abs(c.eval_return - target), c.step))


def quality_policy(env_id: str, quality: str, seed: int = 0) -> Any:
    """The behaviour policy of ``medium`` or ``expert``: actions sampled from the checkpoint's stochastic
    policy (``act`` and ``act_with_log_prob`` on a batch; ``seed`` resets its noise stream)."""
    run = behaviour_run(env_id, seed)
    if quality == "expert":
        return run.policy(None, sampled=True)
    if quality == "medium":
        return run.policy(medium_checkpoint(run, random_return(env_id)), sampled=True)
    raise ValueError(f"quality {quality!r} is not a policy; available: medium, expert")


def medium_replay_episodes(env_id: str, seed: int = 0) -> list[dict[str, Any]]:
    """Whole replay episodes in collection order, up to the medium checkpoint's step."""
    run = behaviour_run(env_id, seed)
    cut = medium_checkpoint(run, random_return(env_id)).step
    episodes = [ep for ep, end in zip(run.episodes, run.episode_end_steps, strict=True) if end <= cut]
    if not episodes:
        raise RuntimeError(f"the behaviour run of {env_id} has no complete episode before step {cut}")
    return [{**ep, "seed": None} for ep in episodes]
