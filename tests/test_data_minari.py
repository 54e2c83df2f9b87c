"""Minari datasets flattened to Transitions (evaluation.md §2, last part; DESIGN.md, Data and tasks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec

from tests.fixtures import write_minari_dataset
from zoo.data.errors import DatasetError, DatasetUnavailableError
from zoo.data.minari_io import load_minari, minari_local_path


@pytest.fixture
def minari_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def test_flatten_episodes_exactly(minari_dir: Path) -> None:
    truth = write_minari_dataset(
        "zoo-test/pendulum/mixed-v0", episodes=(("terminal", 5), ("truncated", 7), ("none", 4), ("terminal", 3))
    )
    data = load_minari("zoo-test/pendulum/mixed-v0")
    assert len(data) == 5 + 7 + 4 + 3
    np.testing.assert_array_equal(data.obs.numpy(), truth["obs"])
    np.testing.assert_array_equal(data.next_obs.numpy(), truth["next_obs"])
    np.testing.assert_array_equal(data.act.numpy(), truth["act"])
    np.testing.assert_allclose(data.reward.numpy()[:, 0], truth["reward"].astype(np.float32))
    np.testing.assert_array_equal(data.terminal.numpy()[:, 0], truth["terminations"].astype(np.float32))
    expected_timeout = truth["truncations"].astype(np.float32)
    expected_timeout[5 + 7 + 4 - 1] = 1.0  # the episode that ended without a flag is truncated there
    np.testing.assert_array_equal(data.timeout.numpy()[:, 0], expected_timeout)
    # no next state crosses an episode: each episode's last next_obs is its own final observation
    end = 0
    for states in truth["observations"]:
        end += states.shape[0] - 1
        np.testing.assert_array_equal(data.next_obs[end - 1].numpy(), states[-1])
    assert data.episode_returns().numel() == 4


def test_meta_has_env_and_reference_scores(minari_dir: Path) -> None:
    write_minari_dataset("zoo-test/pendulum/ref-v0", ref_scores=(-1200.0, -100.0))
    meta = load_minari("zoo-test/pendulum/ref-v0").meta
    assert meta["source"] == "minari"
    assert meta["dataset_id"] == "zoo-test/pendulum/ref-v0"
    assert meta["ref_min_score"] == -1200.0 and meta["ref_max_score"] == -100.0
    assert meta["env_id"] == "Pendulum-v1"
    assert isinstance(meta["env_spec"], EnvSpec) and meta["env_spec"].id == "Pendulum-v1"
    assert meta["env_kwargs"] == {}
    assert meta["total_episodes"] == 4 and meta["total_steps"] == 19


def test_no_reference_scores(minari_dir: Path) -> None:
    write_minari_dataset("zoo-test/pendulum/noref-v0", ref_scores=None)
    meta = load_minari("zoo-test/pendulum/noref-v0").meta
    assert "ref_min_score" not in meta and "ref_max_score" not in meta


def test_local_path_and_latest_version(minari_dir: Path) -> None:
    assert minari_local_path("zoo-test/pendulum/v-v0") is None
    write_minari_dataset("zoo-test/pendulum/v-v0", episodes=(("terminal", 3),))
    write_minari_dataset("zoo-test/pendulum/v-v1", episodes=(("terminal", 2), ("none", 2)))
    assert minari_local_path("zoo-test/pendulum/v-v0") == minari_dir / "zoo-test/pendulum/v-v0"
    assert minari_local_path("zoo-test/pendulum/v") == minari_dir / "zoo-test/pendulum/v-v1"
    assert len(load_minari("zoo-test/pendulum/v")) == 4  # without a version: the newest local one
    assert len(load_minari("zoo-test/pendulum/v-v0")) == 3


def test_missing_without_download(minari_dir: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        load_minari("mujoco/hopper/medium-v0")
    msg = str(info.value)
    assert "zoo data download mujoco/hopper/medium-v0" in msg and "download=True" in msg
    assert str(minari_dir) in msg


def test_download_failure_is_unavailable(minari_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import minari.storage.hosting as hosting

    def offline(*args: object, **kwargs: object) -> None:
        raise ConnectionError("no network")

    monkeypatch.setattr(hosting, "download_dataset", offline)
    with pytest.raises(DatasetUnavailableError, match="no network"):
        load_minari("mujoco/hopper/medium-v0", download=True)


def test_dict_observations_are_refused(minari_dir: Path) -> None:
    write_minari_dataset("zoo-test/dict/obs-v0", env_id=None, dict_obs=True)
    with pytest.raises(DatasetError, match="Box"):
        load_minari("zoo-test/dict/obs-v0")


def test_corrupt_local_dataset(minari_dir: Path) -> None:
    write_minari_dataset("zoo-test/pendulum/bad-v0")
    main = minari_dir / "zoo-test/pendulum/bad-v0/data/main_data.hdf5"
    assert main.is_file()
    main.write_bytes(b"not hdf5" * 64)
    with pytest.raises(DatasetError) as info:
        load_minari("zoo-test/pendulum/bad-v0")
    assert "delete that folder" in str(info.value) and str(minari_dir) in str(info.value)
