"""NeoRL MuJoCo datasets: pick, download and load the npz files (evaluation.md §2 and §7).

The files and their md5 sums are listed in ``neorl_files.json`` (shipped with the package; a copy of the
facts file ``data/neorl_files.json``). The PyPI package named ``neorl`` is unrelated and never used.

npz keys: ``obs``, ``next_obs``, ``action``, ``reward`` (N, 1), ``done`` (N, 1) and ``index``: float32
**exclusive end offsets**, one per trajectory. Terminal = the last row of an episode shorter than 1000 steps
(HalfCheetah never terminates: ``can_terminate=False``), timeout = the last row of a 1000-step episode.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.download import download_file
from zoo.data.errors import DatasetError, DatasetUnavailableError, check_dataset_file, check_finite
from zoo.data.transitions import Transitions
from zoo.paths import data_dir

NEORL_ENVS = {"halfcheetah": "HalfCheetah-v3", "hopper": "Hopper-v3", "walker2d": "Walker2d-v3"}
NEORL_LEVELS = ("low", "medium", "high", "expert")
NEORL_SPLITS = ("train", "val")
MAX_EPISODE_STEPS = 1000
REQUIRED_KEYS = ("obs", "next_obs", "action", "reward", "done", "index")

_FILE = re.compile(r"^(?P<env>[A-Za-z0-9]+-v\d+)-(?P<level>[a-z]+)-(?P<n>\d+)-(?P<split>train|val)-noise\.npz$")


@lru_cache(maxsize=1)
def neorl_catalog() -> dict[str, dict[str, str]]:
    """file name -> {"url", "md5"} for every NeoRL MuJoCo file (the shipped facts file)."""
    return json.loads(files("zoo.data").joinpath("neorl_files.json").read_text())


def neorl_env_name(env: str) -> str:
    """``hopper``, ``Hopper`` or ``Hopper-v3`` -> ``Hopper-v3``."""
    key = re.sub(r"-v3$", "", env.strip(), flags=re.IGNORECASE).lower()
    if key not in NEORL_ENVS:
        raise ValueError(f"unknown NeoRL env {env!r}; choose one of {', '.join(NEORL_ENVS.values())}")
    return NEORL_ENVS[key]


def neorl_filename(env: str, level: str, num_trajectories: int = 1000, split: str = "train") -> str:
    """The smallest catalogued file of (env, level, split) holding at least ``num_trajectories`` (§7)."""
    env_name = neorl_env_name(env)
    level = level.lower()
    if level not in NEORL_LEVELS:
        raise ValueError(f"unknown NeoRL level {level!r}; choose one of {', '.join(NEORL_LEVELS)}")
    if split not in NEORL_SPLITS:
        raise ValueError(f"unknown NeoRL split {split!r}; choose one of {', '.join(NEORL_SPLITS)}")
    if num_trajectories < 1:
        raise ValueError(f"num_trajectories must be >= 1, got {num_trajectories}")
    sizes: dict[int, str] = {}
    for name in neorl_catalog():
        m = _FILE.match(name)
        if m and m["env"] == env_name and m["level"] == level and m["split"] == split:
            sizes[int(m["n"])] = name
    fitting = sorted(n for n in sizes if n >= num_trajectories)
    if not fitting:
        raise ValueError(
            f"no NeoRL {split} file of {env_name}-{level} holds {num_trajectories} trajectories "
            f"(available: {', '.join(map(str, sorted(sizes))) or 'none'})"
        )
    return sizes[fitting[0]]


def neorl_dir() -> Path:
    """The zoo's NeoRL cache: ``data_dir()/"neorl"``."""
    return data_dir() / "neorl"


def neorl_file(env: str, level: str, num_trajectories: int = 1000, split: str = "train", download: bool = True) -> Path:
    """The local npz file for a request (downloaded, md5-verified, into ``data_dir()/"neorl"`` when missing)."""
    name = neorl_filename(env, level, num_trajectories, split)
    dest = neorl_dir() / name
    if check_dataset_file(dest):
        return dest
    entry = neorl_catalog()[name]
    if not download:
        raise DatasetUnavailableError(
            f"NeoRL file {name} is not at {dest}. Download it with `zoo data download` (or download=True), "
            f"or fetch {entry['url']} by hand (md5 {entry['md5']}) and put it at {dest}."
        )
    return download_file(entry["url"], dest, md5=entry["md5"], description=name)


def _corrupt(path: Path, problem: str) -> DatasetError:
    return DatasetError(
        f"{path}: {problem}. The file is corrupt, truncated or not a NeoRL dataset; delete it and download it again."
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in REQUIRED_KEYS if k not in z.files]
            if missing:
                raise _corrupt(path, f"missing key(s) {', '.join(missing)} (found: {', '.join(sorted(z.files))})")
            return {k: z[k] for k in REQUIRED_KEYS}
    except DatasetError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise _corrupt(path, f"numpy could not read it ({type(e).__name__}: {e})") from e


def _column(path: Path, key: str, a: np.ndarray, n: int) -> np.ndarray:
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape != (n, 1):
        raise _corrupt(path, f"'{key}' has shape {a.shape}, expected ({n}, 1)")
    return a


def load_neorl_npz(
    path: str | os.PathLike[str],
    num_trajectories: int | None = None,
    can_terminate: bool = True,
    max_episode_steps: int = MAX_EPISODE_STEPS,
) -> Transitions:
    """Load the first ``num_trajectories`` trajectories (all when None) of a NeoRL npz (evaluation.md §2)."""
    path = Path(path).expanduser()
    if not check_dataset_file(path):
        raise DatasetUnavailableError(f"{path} does not exist; download the dataset or check the path")
    d = _read_npz(path)
    obs, next_obs, act = d["obs"], d["next_obs"], d["action"]
    if obs.ndim != 2 or act.ndim != 2:
        raise _corrupt(path, f"obs {obs.shape} and action {act.shape} must both be 2-d (N, dim)")
    n = obs.shape[0]
    if next_obs.shape != obs.shape:
        raise _corrupt(path, f"next_obs has shape {next_obs.shape}, obs {obs.shape}")
    if act.shape[0] != n:
        raise _corrupt(path, f"inconsistent row counts: obs {n}, action {act.shape[0]}")
    reward = _column(path, "reward", d["reward"], n)
    _column(path, "done", d["done"], n)
    check_finite(str(path), {k: d[k] for k in ("obs", "next_obs", "action", "reward", "done")})

    index = np.asarray(d["index"]).reshape(-1)
    ends = np.rint(index).astype(np.int64)
    if index.size == 0 or not np.allclose(index, ends) or np.any(np.diff(ends) <= 0) or ends[0] <= 0:
        raise _corrupt(path, "'index' must be increasing positive integer end offsets, one per trajectory")
    if ends[-1] > n:
        raise _corrupt(path, f"'index' ends at row {ends[-1]} but the file has only {n} rows")
    available = int(ends.size)
    if num_trajectories is None:
        num_trajectories = available
    if not 1 <= num_trajectories <= available:
        raise DatasetError(f"{path}: asked for {num_trajectories} trajectories, the file holds {available}")

    ends = ends[:num_trajectories]
    starts = np.concatenate([[0], ends[:-1]])
    rows = int(ends[-1])
    lengths = ends - starts
    last = ends - 1
    terminal = np.zeros((rows, 1), dtype=np.float32)
    timeout = np.zeros((rows, 1), dtype=np.float32)
    full = lengths >= max_episode_steps
    if can_terminate:
        terminal[last[~full], 0] = 1.0
        timeout[last[full], 0] = 1.0
    else:
        timeout[last, 0] = 1.0
    meta: dict[str, Any] = {
        "source": "neorl",
        "path": str(path),
        "num_trajectories": int(num_trajectories),
        "trajectories_in_file": available,
        "can_terminate": can_terminate,
        "rows_in_file": int(n),
    }
    return Transitions.from_numpy(
        meta=meta,
        obs=obs[:rows],
        act=act[:rows],
        reward=reward[:rows],
        next_obs=next_obs[:rows],
        terminal=terminal,
        timeout=timeout,
    )


def load_neorl(env: str, level: str, num_trajectories: int = 1000, download: bool = True) -> Transitions:
    """Find (or download) and load the first ``num_trajectories`` training trajectories of a NeoRL dataset."""
    env_name = neorl_env_name(env)
    path = neorl_file(env_name, level, num_trajectories, "train", download=download)
    data = load_neorl_npz(path, num_trajectories, can_terminate=env_name != "HalfCheetah-v3")
    data.meta.update(env=env_name, level=level.lower())
    return data
