"""Bad input through the real command line (issue 11): every case is one line on stderr (no traceback), a
documented exit code, and nothing that was there before is lost or overwritten.

The commands run in-process through ``zoo.cli.main`` (the console entry point, with its error handling), on
real files: a previous run directory, D4RL files with NaN in them, a directory where a dataset file should be.
The signal and lock cases, which need a second process, are in tests/test_signals.py.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.fixtures import write_d4rl_hdf5
from zoo.cli import EXIT_USER_ERROR, main


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Private data dirs, and an earlier run directory in ``out`` that no failing command may touch."""
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "out" / "runs" / "quick" / "pendulum-random" / "mopo" / "0123456789ab" / "seed0"
    earlier.mkdir(parents=True)
    (earlier / "result.json").write_text('{"score": 42.0, "status": "finished"}')
    (earlier / "metrics.jsonl").write_text('{"step": 0, "kind": "setup"}\n')
    (tmp_path / "afile").write_text("a file, not a directory")
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def zoo(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Run ``zoo ARGS`` through the console entry point; (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["zoo", *args])
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


TRAIN = ["train", "--algo", "mopo", "--task", "pendulum-random", "--out", "out", "--no-progress"]

# (name, arguments, fragment of the one-line message). All exit with EXIT_USER_ERROR and write nothing.
CASES = [
    ("unknown task", ["train", "--algo", "mopo", "--task", "nosuch-task", "--out", "out"], "nosuch-task"),
    ("unknown task, --print-config", ["train", "--algo", "mopo", "--task", "nosuch-task", "--print-config"],
     "nosuch-task"),
    ("unknown recipe", ["train", "--algo", "nosuch", "--task", "pendulum-random", "--out", "out"], "nosuch"),
    ("unknown key", [*TRAIN, "--set", "rollout.nosuch=1"], "unknown key(s) rollout.nosuch"),
    ("horizon 0", [*TRAIN, "--set", "rollout.horizon=0"], "rollout.horizon = 0 is out of range: it must be >= 1"),
    ("horizon -5", [*TRAIN, "--set", "rollout.horizon=-5"], "rollout.horizon = -5 is out of range"),
    ("real_ratio 1.5", [*TRAIN, "--set", "batch.real_ratio=1.5"], "batch.real_ratio = 1.5 is out of range"),
    ("real_ratio -0.5", [*TRAIN, "--set", "batch.real_ratio=-0.5"], "batch.real_ratio = -0.5 is out of range"),
    ("batch size 0", [*TRAIN, "--set", "batch.size=0"], "batch.size = 0 is out of range"),
    ("batch size -3", [*TRAIN, "--set", "batch.size=-3"], "batch.size = -3 is out of range"),
    ("eval episodes -1", [*TRAIN, "--set", "eval.episodes=-1"], "eval.episodes = -1 is out of range"),
    ("steps 0", [*TRAIN, "--steps", "0"], "steps = 0 is out of range: it must be >= 1"),
    ("steps -5", [*TRAIN, "--steps", "-5"], "steps = -5 is out of range"),
    ("out is a file", ["train", "--algo", "mopo", "--task", "pendulum-random", "--out", "afile/sub"], "afile"),
    ("missing plugin", [*TRAIN, "--plugin", "missing_module_of_nobody"], "missing_module_of_nobody"),
    ("unknown env to collect", ["data", "collect", "--env", "NoSuchEnv-v0", "--episodes", "1"], "NoSuchEnv"),
    ("empty seed list", ["bench", "--seed-list", "", "--out", "out", "--dry-run"], "--seed-list ''"),
    ("population 0", ["bench", "--population", "0", "--out", "out", "--dry-run"], "--population '0'"),
    ("population word", ["bench", "--population", "many", "--out", "out", "--dry-run"], "expected auto, or a whole"),
    ("seed and seed list", [*TRAIN, "--seed", "3", "--seed-list", "0,1"], "either --seed or --seed-list"),
    ("empty train seed list", [*TRAIN, "--seed-list", ""], "--seed-list ''"),
    ("population of rombrl", ["train", "--algo", "rombrl", "--task", "pendulum-random", "--out", "out",
                              "--seed-list", "0,1"], "rule 'rombrl' has no population support"),
]


@pytest.mark.parametrize(("name", "args", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_and_writes_nothing(
    name: str, args: list[str], fragment: str, home: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    before = snapshot(home)
    code, out, err = zoo(args, monkeypatch, capsys)
    assert code == EXIT_USER_ERROR, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0], err
    assert "Traceback" not in out + err
    assert snapshot(home) == before  # nothing earlier lost or overwritten, nothing half-written


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_leaves_no_run_directory(home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    before = snapshot(home)
    code, _, err = zoo([*TRAIN, "--device", "cuda", "--steps", "10"], monkeypatch, capsys)
    assert code == EXIT_USER_ERROR and len(err.strip().splitlines()) == 1
    assert "CUDA is not available" in err
    assert snapshot(home) == before
    code, _, err = zoo(["bench", "--device", "cuda", "--out", "out", "--tasks", "pendulum-random"], monkeypatch, capsys)
    assert code == EXIT_USER_ERROR and "CUDA is not available" in err and len(err.strip().splitlines()) == 1
    assert snapshot(home) == before
    runs = {p.relative_to(home) for p in (home / "out" / "runs").rglob("*") if p.is_dir()}
    assert all("0123456789ab" in str(p) or len(p.parts) < 6 for p in runs), runs  # no new run directory


def test_debug_flag_and_env_show_the_traceback(home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    args = ["train", "--algo", "mopo", "--task", "nosuch-task", "--out", "out"]
    code, _, err = zoo([*args, "--debug"], monkeypatch, capsys)
    assert code == EXIT_USER_ERROR and "Traceback (most recent call last)" in err and "nosuch-task" in err
    monkeypatch.setenv("ZOO_DEBUG", "1")
    code, _, err = zoo(args, monkeypatch, capsys)
    assert code == EXIT_USER_ERROR and "Traceback (most recent call last)" in err
    monkeypatch.setenv("ZOO_DEBUG", "0")
    code, _, err = zoo(args, monkeypatch, capsys)
    assert "Traceback" not in err and "--debug" in err  # the one line says how to see the traceback


# ---------------------------------------------------------------------------------------------------------------
# Bad data files


def write_hopper_with(home: Path, key: str, row: int, value: float) -> Path:
    path = home / "d4rl" / "hopper_medium-v2.hdf5"
    write_d4rl_hdf5(path)
    with h5py.File(path, "r+") as f:
        data = f[key][()]
        data[row] = value
        f[key][...] = data
    return path


@pytest.mark.parametrize(("key", "row", "value"), [("observations", 4, np.nan), ("rewards", 9, np.inf)])
def test_non_finite_dataset_is_reported_by_info_and_refused_by_train(
    key: str, row: int, value: float, home: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    path = write_hopper_with(home, key, row, value)
    before = snapshot(home)
    code, out, err = zoo(["data", "info", "hopper-medium-v2"], monkeypatch, capsys)
    assert code == 1 and out == "", out
    assert f"{path}: '{key}' holds a non-finite value" in " ".join(err.split()) and f"at row {row}" in err
    assert snapshot(home) == before

    code, out, err = zoo(["train", "--algo", "mopo", "--task", "hopper-medium-v2", "--out", "out", "--steps", "10",
                          "--no-progress"], monkeypatch, capsys)
    assert code == EXIT_USER_ERROR and len(err.strip().splitlines()) == 1, err
    assert f"'{key}' holds a non-finite value" in err and f"at row {row}" in err
    after = snapshot(home)
    assert {k: v for k, v in after.items() if k in before} == before  # the earlier run and the data untouched
    assert not [k for k in after if k.endswith("result.json") and k not in before]  # no score, no cache entry
    assert not [k for k in after if "/cache/" in k]


def test_directory_in_place_of_a_dataset_file(home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    (home / "d4rl" / "hopper_medium-v2.hdf5").mkdir(parents=True)
    code, _, err = zoo(["data", "info", "hopper-medium-v2"], monkeypatch, capsys)
    assert code == 1 and "is a directory, where the dataset file should be" in " ".join(err.split())
    assert "not in the cache" not in err


def test_unreadable_dataset_file_is_not_called_corrupt(home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import os

    path = home / "d4rl" / "hopper_medium-v2.hdf5"
    write_d4rl_hdf5(path)
    real_access = os.access
    # Tests may run as root, who reads any file: refuse this one the way a chmod 000 does for anyone else.
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != path and real_access(p, mode, **kw))
    code, _, err = zoo(["data", "info", "hopper-medium-v2"], monkeypatch, capsys)
    assert code == 1 and f"{path} cannot be read (permission denied)" in err
    assert "corrupt" not in err and "delete" not in err and path.is_file()


def test_data_list_skips_empty_files_and_directories(home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    write_d4rl_hdf5(home / "d4rl" / "hopper_medium-v2.hdf5")
    (home / "d4rl" / "walker2d_medium-v2.hdf5").write_bytes(b"")
    (home / "d4rl" / "halfcheetah_medium-v2.hdf5").mkdir()
    (home / "data" / "neorl").mkdir(parents=True)
    (home / "data" / "neorl" / "Hopper-v3-low-100-train.npz").write_bytes(b"")
    code, out, _ = zoo(["data", "list", "--json"], monkeypatch, capsys)
    assert code == 0
    import json

    assert [row["name"] for row in json.loads(out)] == ["hopper-medium-v2"]


def test_stale_collection_directory_is_removed(home: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A `zoo data collect` killed before its cleanup leaves its temporary directory; the next collection removes
    it when its process is gone (and keeps one whose process still runs)."""
    import subprocess

    from zoo.data.collect import TMP_PREFIX, local_root

    dead = subprocess.Popen(["true"])
    dead.wait()
    root = local_root()
    stale = root / f"{TMP_PREFIX}{dead.pid}-abcdef"
    (stale / "zoo").mkdir(parents=True)
    live = root / f"{TMP_PREFIX}{1}-abcdef"  # pid 1 always runs
    live.mkdir()
    code, out, err = zoo(["data", "collect", "--env", "Pendulum-v1", "--episodes", "1", "--dataset-id",
                          "zoo/pendulum/tiny-v0"], monkeypatch, capsys)
    assert code == 0, out + err
    assert not stale.exists() and live.exists()


def test_overwrite_stopped_between_its_renames_keeps_the_old_dataset(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from zoo.data import collect

    path = collect.collect_quality("Pendulum-v1", episodes=1, dataset_id="zoo/pendulum/tiny-v0")
    before = snapshot(path)
    real_replace, stopped = os.replace, []

    def replace(src, dst):  # a SIGTERM right before the new dataset is renamed into place
        if Path(dst) == path and not stopped:
            stopped.append(src)
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        collect.collect_quality("Pendulum-v1", episodes=2, dataset_id="zoo/pendulum/tiny-v0", overwrite=True)
    monkeypatch.setattr(os, "replace", real_replace)
    assert stopped and snapshot(path) == before  # the old dataset is back, whole
    assert not list(path.parent.parent.parent.glob(".tmp-collect-*"))
