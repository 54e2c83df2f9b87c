"""A results tree in the engine's on-disk format (bench.json, config.toml, metrics.jsonl, result.json,
error.json), built deterministically for the leaderboard golden files and the ``zoo.results`` tests.

It covers what the leaderboard must keep apart or combine: two settings of one suite, a sweep column, a
``zoo train`` run without ``bench.json``, a failed run, a cell with one seed, a recipe re-run under a new
config hash (the newest result wins), clean D4RL tasks with published columns, a noisy suite, a Minari-style
task id with slashes, different step budgets and a critic-target clamp.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from zoo.bench.grid import Setting
from zoo.engine.run import RunId

MTIME = 1_700_000_000  # every file's mtime; a later run adds seconds, so "newest wins" is deterministic


def config_toml(algo: str, task: str, seed: int, steps: int, coef: float, target_min: float, normalize: bool) -> str:
    """A resolved config as ``RunConfig.to_toml`` writes it (a subset of its keys)."""
    tmin = "-inf" if target_min == float("-inf") else repr(target_min)
    return (
        f'# algo = "{algo}", task = "{task}"\nseed = {seed}\nsteps = {steps}\ndevice = "auto"\n\n'
        f'[data]\nloader = "keep_timeouts"\nnormalize_obs = {str(normalize).lower()}\n\n'
        "[rollout]\nevery = 1000\nbatch = 50000\nhorizon = 5\nretain = 5\n\n"
        "[batch]\nsize = 256\nreal_ratio = 0.05\n\n"
        '[dynamics]\nname = "gaussian_ensemble"\nensemble = 7\nhidden = [\n    200,\n    200,\n]\n\n'
        f'[penalty]\nname = "mopo"\ncoef = {coef!r}\n\n[rule]\nname = "mle"\n\n'
        f'[learner]\nname = "sac"\nnum_critics = 2\ngamma = 0.99\ntarget_min = {tmin}\n'
    )


def make_run(
    out: Path,
    suite: str,
    task: str,
    algo: str,
    seed: int,
    score: float | None,
    label: str | None = None,
    setting: Setting | None = Setting("quick"),
    steps: int = 2000,
    config_hash: str = "0123456789ab",
    noise: str = "none",
    target_min: float = float("-inf"),
    coef: float = 1.0,
    age: int = 0,
    diverged: bool = False,
) -> Path:
    """One run directory as ``train_run`` and the scheduler leave it. ``score`` None: a failed run (error.json);
    ``setting`` None: a ``zoo train`` run (no bench.json); ``age``: seconds added to the files' mtime."""
    run_dir = RunId(suite, task, algo, config_hash, seed).path(out)
    run_dir.mkdir(parents=True)
    files = {"config.toml": config_toml(algo, task, seed, steps, coef, target_min, suite.startswith("d4rl"))}
    if setting is not None:
        bench = {
            "suite": suite,
            "task": task,
            "algo": algo,
            "label": label or algo,
            "seed": seed,
            "setting": setting.as_dict(),
            "sweep": {},
            "overrides": [],
            "config_hash": config_hash,
            "steps": steps,
        }
        files["bench.json"] = json.dumps(bench)
    if score is None:
        files["error.json"] = json.dumps({"error": "RuntimeError: boom\nsecond line", "traceback": "", "step": 3})
    else:
        evals = [(steps // 4 * (k + 1), score - 10.0 * (3 - k) + 0.25 * seed) for k in range(4)]
        lines = [{"step": 0, "kind": "setup"}]
        for s, v in evals:
            lines.append({"step": s, "kind": "train", "critic_loss": 1.0 / s})
            lines.append(
                {"step": s, "kind": "eval", "score": v, "return_mean": 10 * v, "return_std": 1.5, "length_mean": 200.0}
            )
        files["metrics.jsonl"] = "".join(json.dumps(line) + "\n" for line in lines)
        result = {
            "task": task,
            "suite": suite,
            "algo": algo,
            "seed": seed,
            "config_hash": config_hash,
            "score": score,
            "return": 10 * score,
            "steps": steps,
            "wall_s": 12.5 + seed,
            "loader": "keep_timeouts",
            "eval_env": "Env-v4",
            "mujoco": "3.3.0",
            "noise": noise,
            "normalize_obs": suite.startswith("d4rl"),
            "status": "finished",
            "best": {"score": score + 5, "step": 1500, "note": "best single evaluation; never in tables"},
        }
        if diverged:
            result["diverged"] = True
        files["result.json"] = json.dumps(result)
    for name, text in files.items():
        (run_dir / name).write_text(text)
        os.utime(run_dir / name, (MTIME + age, MTIME + age))
    return run_dir


QUICK = {  # task -> algo -> per-seed scores
    "pendulum-random": {"mopo": [60.0, 70.0, 80.0], "mbpo": [50.0, 55.0, 90.0]},
    "pendulum-medium": {"mopo": [10.0, 20.0, 30.0], "mbpo": [40.0, 41.0, 42.0]},
}
D4RL = {
    "halfcheetah-medium-v2": {"mopo": [70.0, 74.0], "mobile": [101.0, 99.0], "rambo": [77.5, 80.0]},
    "hopper-medium-replay-v2": {"mopo": [90.0, 100.0], "mobile": [103.0, 104.5], "rambo": [88.0]},
}


def build_tree(out: Path) -> Path:
    """Write the whole tree under ``out`` and return ``out``."""
    for task, algos in QUICK.items():
        for algo, scores in algos.items():
            for seed, score in enumerate(scores):
                make_run(out, "quick", task, algo, seed, score)
    make_run(out, "quick", "pendulum-medium", "mopo", 3, None)  # failed: reported, never averaged
    for seed, score in enumerate([35.0, 45.0]):  # a sweep column on one task only (a partial total)
        make_run(
            out,
            "quick",
            "pendulum-random",
            "mopo",
            seed,
            score,
            label="mopo[penalty.coef=2.0]",
            config_hash="bbbbbbbbbbbb",
            coef=2.0,
            steps=4000,
        )
    make_run(out, "quick", "pendulum-random", "mopo", 0, 11.0, setting=None, config_hash="cccccccccccc")
    make_run(out, "quick", "pendulum-random", "mopo", 0, 33.0, setting=None, config_hash="dddddddddddd", age=5)
    for task, algos in D4RL.items():
        for algo, scores in algos.items():
            clamp = 0.0 if algo == "mobile" else float("-inf")
            for seed, score in enumerate(scores):
                make_run(
                    out,
                    "d4rl",
                    task,
                    algo,
                    seed,
                    score,
                    setting=Setting(),
                    steps=3000,
                    target_min=clamp,
                    config_hash=f"{algo[:4]:x<12}",
                )
                make_run(
                    out,
                    "d4rl-noisy",
                    task,
                    algo,
                    seed,
                    score - 20.0,
                    setting=Setting(),
                    steps=3000,
                    noise="gaussian:0.05",
                    target_min=clamp,
                    config_hash=f"{algo[:4]:x<12}",
                )
    make_run(out, "minari", "mujoco/pusher/expert-v0", "mopo", 0, 12.0, setting=Setting("quick"))
    return out
