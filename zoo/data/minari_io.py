"""Minari datasets as :class:`Transitions` (DESIGN.md, "Data and tasks"; evaluation.md §2, last part).

Every episode is flattened with obs = observations[:-1], next_obs = observations[1:] (so no next state
crosses an episode), terminal = terminations and timeout = truncations; an episode whose last step is
neither is marked truncated there. Only Box observation and action spaces are supported.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.errors import DatasetError, DatasetUnavailableError, check_finite
from zoo.data.transitions import Transitions

_VERSION = re.compile(r"-v(\d+)$")


def minari_datasets_dir() -> Path:
    """Minari's local datasets folder: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets`` (no side effects)."""
    root = os.environ.get("MINARI_DATASETS_PATH")
    return Path(root).expanduser() if root else Path("~/.minari/datasets").expanduser()


def _resolve_local_id(dataset_id: str) -> str | None:
    """The local id for ``dataset_id``; without ``-vN`` the highest local version. None when not local."""
    root = minari_datasets_dir()
    if _VERSION.search(dataset_id):
        return dataset_id if (root / dataset_id / "data").is_dir() else None
    parent = (root / dataset_id).parent
    stem = Path(dataset_id).name
    best: tuple[int, str] | None = None
    if parent.is_dir():
        for d in parent.iterdir():
            m = re.fullmatch(re.escape(stem) + r"-v(\d+)", d.name)
            if m and (d / "data").is_dir() and (best is None or int(m[1]) > best[0]):
                best = (int(m[1]), f"{dataset_id}-v{m[1]}")
    return best[1] if best else None


def minari_local_path(dataset_id: str) -> Path | None:
    """The dataset's folder in Minari's local datasets folder, or None when it is not there (no network)."""
    local = _resolve_local_id(dataset_id)
    return minari_datasets_dir() / local if local else None


def _unavailable(dataset_id: str, reason: str = "") -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"Minari dataset {dataset_id!r} is not in {minari_datasets_dir()} ($MINARI_DATASETS_PATH){reason}. "
        f"Download it with `zoo data download {dataset_id}` or load_minari(..., download=True) "
        f"(or `minari download {dataset_id}`)."
    )


def _flatten(dataset: Any, dataset_id: str, where: Path) -> dict[str, np.ndarray]:
    """Concatenate the episodes: obs = observations[:-1], next_obs = observations[1:], flags per step."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("obs", "act", "reward", "next_obs", "terminal", "timeout")}
    episodes = 0
    for ep in dataset.iterate_episodes():
        n = len(ep)
        o = np.asarray(ep.observations)
        a = np.asarray(ep.actions)
        if n == 0:
            continue
        if o.shape[0] != n + 1 or a.shape[0] != n:
            raise DatasetError(
                f"Minari dataset {dataset_id!r} ({where}), episode {ep.id}: {o.shape[0]} observations and "
                f"{a.shape[0]} actions for {n} steps (expected {n + 1} and {n}); delete it and get it again."
            )
        term = np.asarray(ep.terminations, dtype=bool).reshape(n)
        trunc = np.asarray(ep.truncations, dtype=bool).reshape(n)
        if not (term[-1] or trunc[-1]):
            trunc = trunc.copy()
            trunc[-1] = True  # an episode cut without a flag is a truncation
        parts["obs"].append(o[:-1].reshape(n, -1))
        parts["next_obs"].append(o[1:].reshape(n, -1))
        parts["act"].append(a.reshape(n, -1))
        parts["reward"].append(np.asarray(ep.rewards, dtype=np.float64).reshape(n, 1))
        parts["terminal"].append(term[:, None])
        parts["timeout"].append(trunc[:, None])
        episodes += 1
    if episodes == 0:
        raise DatasetError(f"Minari dataset {dataset_id!r} ({where}) holds no steps")
    return {k: np.concatenate(v) for k, v in parts.items()}


def load_minari(dataset_id: str, download: bool = False) -> Transitions:
    """Load a Minari dataset (from the local folder, or downloaded when ``download``) as flat transitions."""
    import gymnasium as gym
    import minari

    local = _resolve_local_id(dataset_id)
    if local is None and not download:
        raise _unavailable(dataset_id)
    try:
        dataset = minari.load_dataset(local or dataset_id, download=download)
    except FileNotFoundError as e:
        raise _unavailable(dataset_id) from e
    except Exception as e:
        if local is not None:
            raise DatasetError(
                f"Minari dataset {dataset_id!r} at {minari_datasets_dir() / local} could not be read "
                f"({type(e).__name__}: {e}); delete that folder and download or collect it again."
            ) from e
        raise _unavailable(dataset_id, f" and could not be downloaded ({type(e).__name__}: {e})") from e
    where = minari_datasets_dir() / (local or dataset_id)

    obs_space, act_space = dataset.observation_space, dataset.action_space
    if not isinstance(obs_space, gym.spaces.Box):
        raise DatasetError(
            f"Minari dataset {dataset_id!r} ({where}) has a {type(obs_space).__name__} observation space; "
            f"the zoo supports Box (flat vector) observations only. Flatten the observations when you write "
            f"the dataset, or choose another dataset."
        )
    if not isinstance(act_space, gym.spaces.Box):
        raise DatasetError(
            f"Minari dataset {dataset_id!r} ({where}) has a {type(act_space).__name__} action space; "
            f"the zoo supports Box (continuous) actions only."
        )

    try:
        arrays = _flatten(dataset, dataset_id, where)
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise DatasetError(
            f"Minari dataset {dataset_id!r} at {where} could not be read ({type(e).__name__}: {e}); "
            f"delete that folder and download or collect it again."
        ) from e

    # Rows are the flattened steps of every episode, in order (obs = the step's observation).
    check_finite(
        f"Minari dataset {dataset_id!r} ({where})", arrays, fix="Delete that folder and collect or download it again."
    )
    metadata = dataset.storage.metadata
    env_spec = dataset.env_spec
    meta: dict[str, Any] = {
        "source": "minari",
        "dataset_id": dataset.id,
        "path": str(Path(dataset.storage.data_path).parent),
        "total_episodes": int(dataset.total_episodes),
        "total_steps": int(dataset.total_steps),
        "env_id": env_spec.id if env_spec is not None else None,
        "env_spec": env_spec,
        "env_kwargs": dict(env_spec.kwargs) if env_spec is not None else {},
    }
    eval_spec = getattr(dataset, "_eval_env_spec", None)
    if eval_spec is not None:
        meta["eval_env_id"] = eval_spec.id
        meta["eval_env_spec"] = eval_spec
    for key in ("ref_min_score", "ref_max_score"):
        if metadata.get(key) is not None:
            meta[key] = float(metadata[key])
    if metadata.get("zoo_protocol") is not None:  # the zoo's collection protocol (zoo.data.collect)
        meta["collection_protocol"] = int(metadata["zoo_protocol"])
    return Transitions.from_numpy(meta=meta, **arrays)
