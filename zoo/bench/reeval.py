"""``zoo eval RUN_DIR``: evaluate a saved policy again without retraining (issue 5, item 7).

The run's resolved ``config.toml`` rebuilds the learner, its last checkpoint restores the policy and the
observation normalizer, and the policy plays ``--episodes`` episodes in parallel (evaluation.md §3) under
the evaluation noise of ``--suite`` (``d4rl-noisy``: the relative-delta observation noise of evaluation.md
§4; the env state is never perturbed). The record goes to ``RUN_DIR/evals/<suite>-<N>ep.json``; the run's
own ``result.json`` is left alone, so re-evaluations never enter the training leaderboards.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from zoo.io import atomic_write_text

REEVAL_INDEX = 1_000_000  # evaluation index of the reset seeds: distinct from the training evaluations


def _run_meta(run_dir: Path) -> dict[str, Any]:
    for name in ("result.json", "bench.json"):
        path = run_dir / name
        if path.is_file():
            return json.loads(path.read_text())
    config = run_dir / "config.toml"
    first = config.read_text().splitlines()[0] if config.is_file() else ""
    found = dict(re.findall(r'(\w+) = "([^"]*)"', first)) if first.startswith("#") else {}
    return {"algo": found.get("algo"), "task": found.get("task")}


def reevaluate(
    run_dir: Path | str,
    suite: str | None = None,
    episodes: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate the last checkpoint of ``run_dir``; returns (and writes) the evaluation record."""
    import numpy as np
    import torch

    from zoo.config import load_toml, resolve
    from zoo.device import device_kind, resolve_device
    from zoo.engine.evaluate import eval_seed, evaluate_policy
    from zoo.engine.normalizer import ObsNormalizer
    from zoo.tasks.references import normalized_score, normalized_std
    from zoo.tasks.suites import load_suite
    from zoo.tasks.task import get_task

    run_dir = Path(run_dir)
    config_path, ckpt_path = run_dir / "config.toml", run_dir / "checkpoints" / "last.pt"
    if not config_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.toml)")
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoint (checkpoints/last.pt); nothing to evaluate")
    meta = _run_meta(run_dir)
    if not meta.get("task"):
        raise ValueError(f"{run_dir}: cannot tell which task the run trained on")
    cfg = resolve(load_toml(config_path), algo=str(meta.get("algo") or ""))
    suite_name = suite or meta.get("suite") or "custom"
    noise, noise_scale = "none", 0.05
    if suite_name != "custom":
        suite_obj = load_suite(suite_name)
        noise, noise_scale = suite_obj.noise, suite_obj.noise_scale
    task = get_task(str(meta["task"]))
    n = episodes if episodes is not None else cfg.eval.episodes
    if n < 1:
        raise ValueError(f"--episodes must be at least 1, got {n}")
    wanted = device or cfg.device
    if device is None and device_kind(wanted) == "cuda" and not torch.cuda.is_available():
        wanted = "cpu"  # a GPU-trained policy evaluated on a machine without one
    dev = resolve_device(wanted)
    state = torch.load(ckpt_path, map_location=dev, weights_only=False)
    learner = cfg.learner.build(task.spec(), dev)
    learner.load_state_dict(state["learner"])
    normalizer = ObsNormalizer.from_state_dict(state.get("normalizer") or {}).to(dev)
    result = evaluate_policy(
        lambda obs: learner.act(obs, deterministic=True)[0],
        task.make_env,
        episodes=n,
        seeds=[eval_seed(cfg.seed, REEVAL_INDEX, k) for k in range(n)],
        normalizer=normalizer,
        device=dev,
        noise=noise,
        noise_scale=noise_scale,
        noise_seed=eval_seed(cfg.seed, REEVAL_INDEX, 10_007),
    )
    record = {
        "run_dir": str(run_dir),
        "task": task.name,
        "algo": meta.get("algo") or cfg.algo,
        "seed": cfg.seed,
        "config_hash": cfg.hash(),
        "suite": suite_name,
        "noise": noise if noise == "none" else f"{noise}:{noise_scale}",
        "episodes": n,
        "checkpoint_step": int(state.get("step", 0)),
        "return_mean": result.return_mean,
        "return_std": result.return_std,
        "score": float(normalized_score(task, result.return_mean)),
        "score_std": float(normalized_std(task, result.return_std)),
        "returns": [float(r) for r in np.asarray(result.returns)],
        "in_suite": suite_name == "custom" or task.name in load_suite(suite_name).task_names,
    }
    from zoo.tasks.task import safe_name

    atomic_write_text(run_dir / "evals" / f"{safe_name(suite_name)}-{n}ep.json", json.dumps(record, indent=2))
    return record
