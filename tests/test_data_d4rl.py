"""D4RL HDF5 loader (evaluation.md §2) and cache/download lookup (§7)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch

import zoo.data.d4rl as d4rl_mod
from tests.fixtures import write_d4rl_hdf5
from zoo.data.d4rl import (
    d4rl_file,
    d4rl_filename,
    d4rl_url,
    find_d4rl_file,
    load_d4rl,
    load_d4rl_hdf5,
)
from zoo.data.errors import DatasetError, DatasetUnavailableError

# The default fixture: episodes (terminal 5), (timeout 7), (terminal 4), (timeout 6), (terminal 1), (partial 3).
N_ROWS = 26


def _np(t: torch.Tensor) -> np.ndarray:
    return t.numpy()


@pytest.fixture
def d4rl(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "hopper_medium-v2.hdf5"
    return path, write_d4rl_hdf5(path)


def _expected_dropping(truth: dict[str, Any], keep: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """terminal/timeout flags after keeping ``keep``: a kept row that ends an episode of the result
    without being terminal is a timeout (written as an explicit loop, independent of the loader)."""
    term = truth["terminals"][keep].astype(np.float32)
    tout = np.zeros(len(keep), dtype=np.float32)
    for k, i in enumerate(keep):
        last = k == len(keep) - 1 or truth["episode"][keep[k + 1]] != truth["episode"][i]
        if truth["timeouts"][i] or (last and not truth["terminals"][i]):
            tout[k] = 1.0
    return term, tout


def test_keep_timeouts_keeps_every_row(d4rl: tuple[Path, dict[str, Any]]) -> None:
    path, truth = d4rl
    data = load_d4rl_hdf5(path)
    assert len(data) == N_ROWS == truth["rewards"].shape[0]
    np.testing.assert_array_equal(_np(data.obs), truth["observations"].astype(np.float32))
    np.testing.assert_array_equal(_np(data.next_obs), truth["next_observations"].astype(np.float32))
    np.testing.assert_array_equal(_np(data.act), truth["actions"].astype(np.float32))
    np.testing.assert_array_equal(_np(data.reward)[:, 0], truth["rewards"].astype(np.float32))
    np.testing.assert_array_equal(_np(data.terminal)[:, 0], truth["terminals"].astype(np.float32))
    expected_timeout = truth["timeouts"].astype(np.float32)
    expected_timeout[-1] = 1.0  # the trailing partial episode is marked truncated (§2.4)
    np.testing.assert_array_equal(_np(data.timeout)[:, 0], expected_timeout)
    assert int(data.terminal.sum()) == 3 and int(data.timeout.sum()) == 3
    assert data.meta["source"] == "d4rl" and data.meta["loader"] == "keep_timeouts"
    assert data.meta["path"] == str(path)
    # §2.9: per-episode reward sums match the raw file
    np.testing.assert_allclose(data.episode_returns().numpy(), truth["returns"], rtol=1e-5, atol=1e-5)


def test_olk_drops_timeout_rows_and_last_row(d4rl: tuple[Path, dict[str, Any]]) -> None:
    path, truth = d4rl
    data = load_d4rl_hdf5(path, mode="olk")
    keep = [i for i in range(N_ROWS - 1) if not truth["timeouts"][i]]
    assert len(data) == len(keep) == N_ROWS - 2 - 1  # two timeout rows and the file's last row
    np.testing.assert_array_equal(_np(data.obs), truth["observations"][keep].astype(np.float32))
    # next state from next_observations: never the following row of another episode
    np.testing.assert_array_equal(_np(data.next_obs), truth["next_observations"][keep].astype(np.float32))
    term, tout = _expected_dropping(truth, keep)
    np.testing.assert_array_equal(_np(data.terminal)[:, 0], term)
    np.testing.assert_array_equal(_np(data.timeout)[:, 0], tout)
    assert data.meta["loader"] == "olk"


def _qlearning_reference(truth: dict[str, Any]) -> dict[str, np.ndarray]:
    """d4rl.qlearning_dataset(terminate_on_end=False) on a file with timeouts, as an explicit loop."""
    out: dict[str, list[Any]] = {"obs": [], "next_obs": [], "term": [], "rows": []}
    obs = truth["observations"]
    for i in range(obs.shape[0] - 1):
        if truth["timeouts"][i]:
            continue
        out["obs"].append(obs[i])
        out["next_obs"].append(obs[i + 1])
        out["term"].append(bool(truth["terminals"][i]))
        out["rows"].append(i)
    return {k: np.array(v) for k, v in out.items()}


def test_d4rl_qlearning_reproduces_qlearning_dataset(d4rl: tuple[Path, dict[str, Any]]) -> None:
    path, truth = d4rl
    data = load_d4rl_hdf5(path, mode="d4rl_qlearning")
    ref = _qlearning_reference(truth)
    assert len(data) == len(ref["obs"]) == 23
    np.testing.assert_array_equal(_np(data.obs), ref["obs"].astype(np.float32))
    np.testing.assert_array_equal(_np(data.next_obs), ref["next_obs"].astype(np.float32))
    np.testing.assert_array_equal(_np(data.terminal)[:, 0], ref["term"].astype(np.float32))
    # the known defect it reproduces: a terminal row's next state is the next episode's reset state
    first_terminal = int(np.flatnonzero(ref["term"])[0])
    row = ref["rows"][first_terminal]
    np.testing.assert_array_equal(_np(data.next_obs[first_terminal]), truth["observations"][row + 1].astype(np.float32))
    assert not np.array_equal(truth["observations"][row + 1], truth["next_observations"][row])


def test_without_next_observations_stays_inside_episodes(tmp_path: Path) -> None:
    path = tmp_path / "hopper_medium-v0.hdf5"
    truth = write_d4rl_hdf5(path, with_next_obs=False)
    for mode in ("keep_timeouts", "olk"):
        data = load_d4rl_hdf5(path, mode=mode)
        boundary = truth["terminals"] | truth["timeouts"]
        keep = [i for i in range(N_ROWS - 1) if not boundary[i]]
        # lengths 5,7,4,6,1,3: each episode loses its last step -> 4+6+3+5+0+2
        assert len(data) == len(keep) == 20
        np.testing.assert_array_equal(_np(data.obs), truth["observations"][keep].astype(np.float32))
        np.testing.assert_array_equal(_np(data.next_obs), truth["next_observations"][keep].astype(np.float32))
        assert float(data.terminal.sum()) == 0.0
        _, tout = _expected_dropping(truth, keep)
        np.testing.assert_array_equal(_np(data.timeout)[:, 0], tout)
        assert int(data.timeout.sum()) == 5  # one boundary per episode that kept a row
        assert data.meta["has_next_observations"] is False


def test_float64_file_is_cast_to_float32(tmp_path: Path) -> None:
    path = tmp_path / "hopper_medium_replay-v2.hdf5"
    truth = write_d4rl_hdf5(path, dtype=np.float64)
    with h5py.File(path) as f:
        assert f["observations"].dtype == np.float64
    data = load_d4rl_hdf5(path)
    for name, t in data.tensors().items():
        assert t.dtype == torch.float32, name
    np.testing.assert_array_equal(_np(data.obs), truth["observations"].astype(np.float32))
    np.testing.assert_array_equal(_np(data.reward)[:, 0], truth["rewards"].astype(np.float32))


def test_scalar_metadata_is_read(d4rl: tuple[Path, dict[str, Any]]) -> None:
    path, _ = d4rl
    meta = load_d4rl_hdf5(path, dataset_id="hopper-medium-v2").meta
    assert meta["file_metadata"] == {"metadata/algorithm": "SAC", "metadata/iteration": 42}
    assert meta["dataset_id"] == "hopper-medium-v2"


def test_rewards_as_column_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "col.hdf5"
    truth = write_d4rl_hdf5(path)
    with h5py.File(path, "a") as f:
        del f["rewards"]
        f.create_dataset("rewards", data=truth["rewards"][:, None].astype(np.float32))
    data = load_d4rl_hdf5(path)
    np.testing.assert_array_equal(_np(data.reward)[:, 0], truth["rewards"].astype(np.float32))


# -- bad files ------------------------------------------------------------------------------------
def test_garbage_file_is_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "hopper_medium-v2.hdf5"
    path.write_bytes(b"<html>503 Service Unavailable</html>" * 10)
    with pytest.raises(DatasetError) as info:
        load_d4rl_hdf5(path)
    assert str(path) in str(info.value) and "delete it" in str(info.value)


def test_truncated_file_is_dataset_error(d4rl: tuple[Path, dict[str, Any]]) -> None:
    path, _ = d4rl
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetError) as info:
        load_d4rl_hdf5(path)
    assert str(path) in str(info.value) and "download" in str(info.value)


def test_missing_key_is_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "nokey.hdf5"
    write_d4rl_hdf5(path, drop_keys=["timeouts"])
    with pytest.raises(DatasetError) as info:
        load_d4rl_hdf5(path)
    msg = str(info.value)
    assert "timeouts" in msg and str(path) in msg and "download" in msg


def test_inconsistent_row_counts_is_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "rows.hdf5"
    truth = write_d4rl_hdf5(path)
    with h5py.File(path, "a") as f:
        del f["actions"]
        f.create_dataset("actions", data=truth["actions"][:-3])
    with pytest.raises(DatasetError, match="row counts"):
        load_d4rl_hdf5(path)


def test_scalar_required_key_is_dataset_error(tmp_path: Path) -> None:
    path = tmp_path / "scalar.hdf5"
    write_d4rl_hdf5(path)
    with h5py.File(path, "a") as f:
        del f["rewards"]
        f.create_dataset("rewards", data=np.float32(1.0))
    with pytest.raises(DatasetError, match="rewards"):
        load_d4rl_hdf5(path)


def test_missing_path_and_unknown_mode(tmp_path: Path, d4rl: tuple[Path, dict[str, Any]]) -> None:
    with pytest.raises(DatasetUnavailableError):
        load_d4rl_hdf5(tmp_path / "nope.hdf5")
    with pytest.raises(ValueError, match="keep_timeouts"):
        load_d4rl_hdf5(d4rl[0], mode="qlearning")


# -- names, cache, download ---------------------------------------------------------------------
def test_filename_and_url() -> None:
    assert d4rl_filename("hopper-medium-replay-v2") == "hopper_medium_replay-v2.hdf5"
    assert d4rl_filename("halfcheetah-medium-expert-v2") == "halfcheetah_medium_expert-v2.hdf5"
    assert d4rl_filename("walker2d-random-v2") == "walker2d_random-v2.hdf5"
    assert (
        d4rl_url("hopper-medium-replay-v2")
        == "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/hopper_medium_replay-v2.hdf5"
    )
    with pytest.raises(ValueError):
        d4rl_url("antmaze-umaze-v2")
    with pytest.raises(ValueError):
        d4rl_filename("hopper")


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    d4rl_dir, zoo_dir = tmp_path / "d4rl_cache", tmp_path / "zoo_data"
    monkeypatch.setenv("D4RL_DATASET_DIR", str(d4rl_dir))
    monkeypatch.setenv("ZOO_DATA", str(zoo_dir))
    return d4rl_dir, zoo_dir


def test_cache_lookup_order(dirs: tuple[Path, Path]) -> None:
    d4rl_dir, zoo_dir = dirs
    assert find_d4rl_file("hopper-medium-v2") is None
    zoo_file = zoo_dir / "d4rl" / "hopper_medium-v2.hdf5"
    write_d4rl_hdf5(zoo_file)
    assert find_d4rl_file("hopper-medium-v2") == zoo_file
    d4rl_own = d4rl_dir / "hopper_medium-v2.hdf5"  # D4RL's own cache wins and is used as is
    write_d4rl_hdf5(d4rl_own, seed=1)
    assert find_d4rl_file("hopper-medium-v2") == d4rl_own
    assert d4rl_file("hopper-medium-v2", download=False) == d4rl_own
    assert load_d4rl("hopper-medium-v2", download=False).meta["path"] == str(d4rl_own)


def test_missing_without_download_names_both_places_and_url(dirs: tuple[Path, Path]) -> None:
    d4rl_dir, zoo_dir = dirs
    with pytest.raises(DatasetUnavailableError) as info:
        d4rl_file("walker2d-medium-replay-v2", download=False)
    msg = str(info.value)
    assert str(d4rl_dir / "walker2d_medium_replay-v2.hdf5") in msg
    assert str(zoo_dir / "d4rl" / "walker2d_medium_replay-v2.hdf5") in msg
    assert d4rl_url("walker2d-medium-replay-v2") in msg
    assert "zoo data download" in msg


def test_download_into_zoo_cache(dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures import serve_files

    _, zoo_dir = dirs
    src = tmp_path / "served.hdf5"
    truth = write_d4rl_hdf5(src)
    with serve_files({"/gym_mujoco_v2/hopper_medium-v2.hdf5": src.read_bytes()}) as base:
        monkeypatch.setattr(d4rl_mod, "D4RL_BASE_URL", f"{base}/gym_mujoco_v2")
        path = d4rl_file("hopper-medium-v2")
    assert path == zoo_dir / "d4rl" / "hopper_medium-v2.hdf5"
    data = load_d4rl_hdf5(path)
    np.testing.assert_array_equal(_np(data.obs), truth["observations"].astype(np.float32))
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_download_without_network(dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _, zoo_dir = dirs
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setattr(d4rl_mod, "D4RL_BASE_URL", f"http://127.0.0.1:{port}/gym_mujoco_v2")
    dest = zoo_dir / "d4rl" / "hopper_expert-v2.hdf5"
    with pytest.raises(DatasetUnavailableError) as info:
        d4rl_file("hopper-expert-v2")
    assert str(dest) in str(info.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
