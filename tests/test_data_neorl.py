"""NeoRL npz loader and file selection (evaluation.md §2, §7)."""

from __future__ import annotations

import hashlib
import json
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import zoo.data.neorl as neorl_mod
from tests.fixtures import serve_files, write_neorl_npz
from zoo.data.errors import DatasetError, DatasetUnavailableError
from zoo.data.neorl import load_neorl, load_neorl_npz, neorl_catalog, neorl_file, neorl_filename

LENGTHS = (1000, 37, 1000, 12, 5)


@pytest.fixture
def npz(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "Hopper-v3-medium-100-train-noise.npz"
    return path, write_neorl_npz(path, lengths=LENGTHS)


def _flags(lengths: tuple[int, ...], can_terminate: bool = True) -> tuple[np.ndarray, np.ndarray]:
    n = sum(lengths)
    term, tout = np.zeros(n, np.float32), np.zeros(n, np.float32)
    end = 0
    for length in lengths:
        end += length
        if length == 1000 or not can_terminate:
            tout[end - 1] = 1
        else:
            term[end - 1] = 1
    return term, tout


def test_load_all_trajectories(npz: tuple[Path, dict[str, Any]]) -> None:
    path, truth = npz
    data = load_neorl_npz(path)
    assert len(data) == sum(LENGTHS) == 2054
    np.testing.assert_array_equal(data.obs.numpy(), truth["obs"])
    np.testing.assert_array_equal(data.next_obs.numpy(), truth["next_obs"])  # the file's own next state
    np.testing.assert_array_equal(data.act.numpy(), truth["action"])
    np.testing.assert_array_equal(data.reward.numpy(), truth["reward"])
    term, tout = _flags(LENGTHS)
    np.testing.assert_array_equal(data.terminal.numpy()[:, 0], term)
    np.testing.assert_array_equal(data.timeout.numpy()[:, 0], tout)
    # next states never cross an episode: the last row of each episode has its own next state,
    # not the first observation of the next episode
    for end in truth["ends"][:-1]:
        assert not np.array_equal(data.next_obs[end - 1].numpy(), truth["obs"][end])
    # episodes are recovered exactly
    assert data.episode_returns().numel() == len(LENGTHS)
    assert data.meta["source"] == "neorl" and data.meta["trajectories_in_file"] == 5


@pytest.mark.parametrize("n, rows, last", [(1, 1000, "timeout"), (2, 1037, "terminal"), (4, 2049, "terminal")])
def test_first_n_trajectories(npz: tuple[Path, dict[str, Any]], n: int, rows: int, last: str) -> None:
    path, truth = npz
    data = load_neorl_npz(path, num_trajectories=n)
    assert len(data) == rows
    np.testing.assert_array_equal(data.obs.numpy(), truth["obs"][:rows])
    term, tout = _flags(LENGTHS[:n])
    np.testing.assert_array_equal(data.terminal.numpy()[:, 0], term)
    np.testing.assert_array_equal(data.timeout.numpy()[:, 0], tout)
    assert (data.terminal if last == "terminal" else data.timeout)[-1, 0] == 1
    assert data.meta["num_trajectories"] == n


def test_halfcheetah_never_terminates(npz: tuple[Path, dict[str, Any]]) -> None:
    path, _ = npz
    data = load_neorl_npz(path, can_terminate=False)
    assert float(data.terminal.sum()) == 0
    _, tout = _flags(LENGTHS, can_terminate=False)
    np.testing.assert_array_equal(data.timeout.numpy()[:, 0], tout)


def test_too_many_trajectories(npz: tuple[Path, dict[str, Any]]) -> None:
    with pytest.raises(DatasetError, match="holds 5"):
        load_neorl_npz(npz[0], num_trajectories=6)


def _rewrite(path: Path, **changes: Any) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    for k in [k for k, v in arrays.items() if v is None]:
        del arrays[k]
    np.savez(path, **arrays)


def test_missing_key(npz: tuple[Path, dict[str, Any]]) -> None:
    path, _ = npz
    _rewrite(path, index=None)
    with pytest.raises(DatasetError) as info:
        load_neorl_npz(path)
    assert "index" in str(info.value) and str(path) in str(info.value)


def test_bad_shapes(npz: tuple[Path, dict[str, Any]]) -> None:
    path, truth = npz
    _rewrite(path, reward=np.zeros((truth["obs"].shape[0], 2), np.float32))
    with pytest.raises(DatasetError, match="reward"):
        load_neorl_npz(path)
    _rewrite(path, reward=truth["reward"], next_obs=truth["next_obs"][:, :5])
    with pytest.raises(DatasetError, match="next_obs"):
        load_neorl_npz(path)


@pytest.mark.parametrize("index", [[1000.0, 900.0, 2054.0], [1000.0, 3000.0], [0.0, 2054.0], [10.5, 2054.0]])
def test_bad_index(npz: tuple[Path, dict[str, Any]], index: list[float]) -> None:
    path, _ = npz
    _rewrite(path, index=np.array(index, np.float32))
    with pytest.raises(DatasetError, match="index"):
        load_neorl_npz(path)


def test_corrupt_file(tmp_path: Path, npz: tuple[Path, dict[str, Any]]) -> None:
    path, _ = npz
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DatasetError) as info:
        load_neorl_npz(path)
    assert str(path) in str(info.value) and "download" in str(info.value)
    with pytest.raises(DatasetUnavailableError):
        load_neorl_npz(tmp_path / "nope.npz")


# -- the facts file and file selection ------------------------------------------------------------
def test_catalog_ships_as_package_data() -> None:
    text = files("zoo.data").joinpath("neorl_files.json").read_text()
    catalog = json.loads(text)
    assert catalog == neorl_catalog()
    assert len(catalog) == 72
    entry = catalog["Hopper-v3-medium-1000-train-noise.npz"]
    assert entry["url"].endswith("/Hopper-v3/Hopper-v3-medium-1000-train-noise.npz")
    assert len(entry["md5"]) == 32


def test_smallest_file_holding_n() -> None:
    assert neorl_filename("Hopper-v3", "medium", 1000) == "Hopper-v3-medium-1000-train-noise.npz"
    assert neorl_filename("hopper", "medium", 10) == "Hopper-v3-medium-100-train-noise.npz"  # no 10-train file
    assert neorl_filename("walker2d", "low", 101) == "Walker2d-v3-low-1000-train-noise.npz"
    assert neorl_filename("HalfCheetah", "expert", 10, "val") == "HalfCheetah-v3-expert-10-val-noise.npz"
    assert neorl_filename("halfcheetah-v3", "high", 10000) == "HalfCheetah-v3-high-10000-train-noise.npz"
    with pytest.raises(ValueError, match="available"):
        neorl_filename("hopper", "medium", 20000)
    with pytest.raises(ValueError, match="Hopper-v3"):
        neorl_filename("ant", "medium", 100)
    with pytest.raises(ValueError, match="low"):
        neorl_filename("hopper", "random", 100)


@pytest.fixture
def zoo_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "zoo"))
    return tmp_path / "zoo"


def test_cached_file_is_used(zoo_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = zoo_data / "neorl" / "Hopper-v3-low-100-train-noise.npz"
    write_neorl_npz(dest, lengths=(1000, 20))

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("must not download a cached file")

    monkeypatch.setattr(neorl_mod, "download_file", no_download)
    assert neorl_file("hopper", "low", 50, download=False) == dest
    data = load_neorl("Hopper-v3", "low", num_trajectories=2, download=False)
    assert len(data) == 1020 and data.meta["env"] == "Hopper-v3"


def test_missing_without_download(zoo_data: Path) -> None:
    with pytest.raises(DatasetUnavailableError) as info:
        neorl_file("walker2d", "high", 1000, download=False)
    msg = str(info.value)
    name = "Walker2d-v3-high-1000-train-noise.npz"
    assert str(zoo_data / "neorl" / name) in msg
    assert neorl_catalog()[name]["url"] in msg and neorl_catalog()[name]["md5"] in msg


def _fake_catalog(base: str, body: bytes, md5: str) -> dict[str, dict[str, str]]:
    name = "HalfCheetah-v3-medium-100-train-noise.npz"
    return {name: {"url": f"{base}/{name}", "md5": md5}}


def test_download_verifies_md5(zoo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "served.npz"
    truth = write_neorl_npz(src, lengths=(1000, 1000, 7))
    body = src.read_bytes()
    name = "HalfCheetah-v3-medium-100-train-noise.npz"
    dest = zoo_data / "neorl" / name
    with serve_files({f"/{name}": body}) as base:
        monkeypatch.setattr(neorl_mod, "neorl_catalog", lambda: _fake_catalog(base, body, "f" * 32))
        with pytest.raises(DatasetError, match="md5"):
            neorl_file("halfcheetah", "medium", 100)
        assert not dest.exists() and list(dest.parent.iterdir()) == []
        good = hashlib.md5(body).hexdigest()
        monkeypatch.setattr(neorl_mod, "neorl_catalog", lambda: _fake_catalog(base, body, good))
        assert neorl_file("halfcheetah", "medium", 100) == dest
    data = load_neorl("halfcheetah", "medium", num_trajectories=3)
    np.testing.assert_array_equal(data.obs.numpy(), truth["obs"])
    assert float(data.terminal.sum()) == 0  # HalfCheetah never terminates
    assert float(data.timeout.sum()) == 3
