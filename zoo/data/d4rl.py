"""D4RL MuJoCo datasets: find or download the HDF5 file and load it (evaluation.md §2 and §7).

The files are read with h5py; ``d4rl`` and ``mujoco_py`` are never imported (neither works on a modern
machine). Loader modes (evaluation.md §2):

- ``keep_timeouts`` (default): every row of the file, next state from ``next_observations``; timeout rows
  kept with ``timeout = 1``; the trailing partial episode marked truncated.
- ``olk``: drop the timeout rows and the file's last row, as OfflineRL-Kit's loader does.
- ``d4rl_qlearning``: what ``d4rl.qlearning_dataset`` returns (next state = ``observations[i + 1]``, even
  across episodes; timeout rows and the last row dropped). For comparison runs only.

Without ``next_observations`` (v0 files), ``keep_timeouts`` and ``olk`` take the next state from the next
row inside an episode and drop each episode's last step (§2.5).

In every mode a kept row that ends an episode in the returned data without being terminal gets
``timeout = 1``, so episode boundaries survive the dropping of rows.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.download import download_file
from zoo.data.errors import DatasetError, DatasetUnavailableError, check_dataset_file, check_finite
from zoo.data.transitions import Transitions
from zoo.paths import data_dir

D4RL_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2"
D4RL_ENVS = ("halfcheetah", "hopper", "walker2d", "ant")
D4RL_DATASETS = ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert")
MODES = ("keep_timeouts", "olk", "d4rl_qlearning")
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")

_ID = re.compile(r"^(?P<name>[A-Za-z0-9_\-]+)-(?P<version>v\d+)$")


# -- names and places ------------------------------------------------------------------------------
def d4rl_filename(dataset_id: str) -> str:
    """D4RL's file name for a dataset id: ``hopper-medium-replay-v2`` -> ``hopper_medium_replay-v2.hdf5`` (§7)."""
    m = _ID.match(dataset_id)
    if m is None:
        raise ValueError(f"not a D4RL dataset id: {dataset_id!r} (expected e.g. 'hopper-medium-replay-v2')")
    return f"{m['name'].replace('-', '_')}-{m['version']}.hdf5"


def d4rl_url(dataset_id: str) -> str:
    """The official download URL of a D4RL MuJoCo v2 dataset (§7)."""
    m = _ID.match(dataset_id)
    env, _, dataset = (m["name"] if m else "").partition("-")
    if m is None or m["version"] != "v2" or env not in D4RL_ENVS or dataset not in D4RL_DATASETS:
        raise ValueError(
            f"no known download URL for {dataset_id!r}: the zoo downloads the D4RL MuJoCo v2 datasets "
            f"<env>-<dataset>-v2 with env in {', '.join(D4RL_ENVS)} and dataset in {', '.join(D4RL_DATASETS)}"
        )
    return f"{D4RL_BASE_URL}/{d4rl_filename(dataset_id)}"


def d4rl_dataset_dir() -> Path:
    """D4RL's own cache: ``$D4RL_DATASET_DIR`` or ``~/.d4rl/datasets``."""
    return Path(os.environ.get("D4RL_DATASET_DIR", "~/.d4rl/datasets")).expanduser()


def zoo_d4rl_dir() -> Path:
    """The zoo's D4RL cache: ``data_dir()/"d4rl"``."""
    return data_dir() / "d4rl"


def find_d4rl_file(dataset_id: str) -> Path | None:
    """An existing file for ``dataset_id``: D4RL's cache first (used as is), then the zoo's; None if neither."""
    name = d4rl_filename(dataset_id)
    for folder in (d4rl_dataset_dir(), zoo_d4rl_dir()):
        candidate = folder / name
        if check_dataset_file(candidate):
            return candidate
    return None


def d4rl_file(dataset_id: str, download: bool = True) -> Path:
    """The local HDF5 file of ``dataset_id``, downloaded into ``data_dir()/"d4rl"`` when missing."""
    found = find_d4rl_file(dataset_id)
    if found is not None:
        return found
    name = d4rl_filename(dataset_id)
    dest = zoo_d4rl_dir() / name
    try:
        url = d4rl_url(dataset_id)
    except ValueError as e:
        raise DatasetUnavailableError(
            f"{dataset_id}: not found at {d4rl_dataset_dir() / name} or {dest}, and {e}. "
            f"Put the file at one of those paths by hand."
        ) from None
    if not download:
        raise DatasetUnavailableError(
            f"{dataset_id}: not found at {d4rl_dataset_dir() / name} ($D4RL_DATASET_DIR) or {dest} "
            f"($ZOO_DATA/d4rl). Download it with `zoo data download {dataset_id}` (or download=True), "
            f"or fetch {url} by hand and put it at {dest}."
        )
    return download_file(url, dest, md5=None, description=dataset_id)


# -- loading ---------------------------------------------------------------------------------------
def _corrupt(path: Path, problem: str) -> DatasetError:
    return DatasetError(
        f"{path}: {problem}. The file is corrupt, truncated or not a D4RL dataset; delete it and download it "
        f"again (`zoo data download <dataset id>`)."
    )


def _scalar_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_file(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The per-row arrays (required keys and next_observations when present) and the 0-d entries."""
    import h5py

    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in REQUIRED_KEYS if k not in f]
            if missing:
                raise _corrupt(path, f"missing key(s) {', '.join(missing)} (found: {', '.join(sorted(f.keys()))})")
            for key in (*REQUIRED_KEYS, "next_observations"):
                if key not in f:
                    continue
                ds = f[key]
                if not isinstance(ds, h5py.Dataset):
                    raise _corrupt(path, f"'{key}' is a group, expected an array")
                if ds.ndim == 0:
                    raise _corrupt(path, f"'{key}' is a scalar, expected one entry per row")
                arrays[key] = ds[()]

            def collect(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset) and obj.ndim == 0:
                    try:
                        scalars[name] = _scalar_value(obj[()])
                    except Exception:  # an unreadable metadata entry is no reason to refuse the data
                        pass

            f.visititems(collect)
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise _corrupt(path, f"h5py could not read it ({type(e).__name__}: {e})") from e
    return arrays, scalars


def _flat(path: Path, key: str, a: np.ndarray) -> np.ndarray:
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise _corrupt(path, f"'{key}' has shape {a.shape}, expected (N,) or (N, 1)")
    return a


def load_d4rl_hdf5(
    path: str | os.PathLike[str], mode: str = "keep_timeouts", dataset_id: str | None = None
) -> Transitions:
    """Load a D4RL HDF5 file into :class:`Transitions` following evaluation.md §2 (see the module doc)."""
    if mode not in MODES:
        raise ValueError(f"unknown D4RL loader mode {mode!r}; choose one of {', '.join(MODES)}")
    path = Path(path).expanduser()
    if not check_dataset_file(path):
        raise DatasetUnavailableError(f"{path} does not exist; download the dataset or check the path")
    arrays, scalars = _read_file(path)

    obs = arrays["observations"]
    act = arrays["actions"]
    n = obs.shape[0]
    if obs.ndim != 2 or act.ndim != 2:
        raise _corrupt(path, f"observations {obs.shape} and actions {act.shape} must both be 2-d (N, dim)")
    rewards = _flat(path, "rewards", arrays["rewards"])
    terminals = _flat(path, "terminals", arrays["terminals"]).astype(bool)
    timeouts = _flat(path, "timeouts", arrays["timeouts"]).astype(bool)
    next_obs = arrays.get("next_observations")
    counts = {k: v.shape[0] for k, v in arrays.items()}
    if len(set(counts.values())) != 1:
        raise _corrupt(path, "inconsistent row counts: " + ", ".join(f"{k} {c}" for k, c in counts.items()))
    if next_obs is not None and next_obs.shape != obs.shape:
        raise _corrupt(path, f"next_observations has shape {next_obs.shape}, observations {obs.shape}")
    if n < 2:
        raise _corrupt(path, f"it holds {n} row(s)")
    check_finite(str(path), arrays)

    rows = np.arange(n)
    if mode == "keep_timeouts" and next_obs is not None:
        keep = rows
        nxt = next_obs
    elif mode == "olk" and next_obs is not None:
        keep = rows[:-1][~timeouts[:-1]]
        nxt = next_obs[keep]
    elif mode == "d4rl_qlearning":
        keep = rows[:-1][~timeouts[:-1]]
        nxt = obs[keep + 1]
    else:  # no next_observations: next row inside an episode only (§2.5)
        boundary = terminals | timeouts
        keep = rows[:-1][~boundary[:-1]]
        nxt = obs[keep + 1]

    if keep.size == 0:
        raise _corrupt(path, f"no transitions are left in mode {mode!r}")
    terminal = terminals[keep]
    # Episode of every file row (boundaries = terminals or timeouts); a kept row ends an episode of the
    # returned data when the next kept row belongs to another episode, or when it is the last kept row.
    boundary = terminals | timeouts
    episode = np.cumsum(boundary) - boundary
    ends = np.ones(keep.size, dtype=bool)
    ends[:-1] = episode[keep[:-1]] != episode[keep[1:]]
    timeout = timeouts[keep] | (ends & ~terminal)

    meta: dict[str, Any] = {
        "source": "d4rl",
        "path": str(path),
        "loader": mode,
        "rows_in_file": int(n),
        "has_next_observations": next_obs is not None,
    }
    if dataset_id is not None:
        meta["dataset_id"] = dataset_id
    if scalars:
        meta["file_metadata"] = scalars
    take: slice | np.ndarray = slice(None) if keep.size == n else keep  # no copy when every row is kept
    return Transitions.from_numpy(
        meta=meta,
        obs=obs[take],
        act=act[take],
        reward=rewards[take][:, None],
        next_obs=nxt,
        terminal=terminal[:, None],
        timeout=timeout[:, None],
    )


def load_d4rl(dataset_id: str, mode: str = "keep_timeouts", download: bool = True) -> Transitions:
    """Find (or download) and load a D4RL dataset by id."""
    return load_d4rl_hdf5(d4rl_file(dataset_id, download=download), mode=mode, dataset_id=dataset_id)
