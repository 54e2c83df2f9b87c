"""Reliability fixes of issue 11 that need no CLI (default tier): file modes, numeric ranges, non-finite data,
the run-directory lock, the verified pretraining cache, and resume bookkeeping (a resumed run equals an
uninterrupted one, value for value)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import stat
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.fixtures import HopperShapedTask, hopper_shaped_rows, write_d4rl_hdf5, write_neorl_npz
from zoo.config import ENGINE_SECTIONS, TopLevel, bounded, check_ranges, resolve
from zoo.data.d4rl import load_d4rl_hdf5
from zoo.data.errors import DatasetError
from zoo.data.neorl import load_neorl_npz
from zoo.engine.pretrain import pretrained_dynamics
from zoo.engine.run import RunLockedError, run_lock
from zoo.engine.trainer import Trainer
from zoo.io import atomic_torch_save, atomic_write_text
from zoo.registry import REGISTRY, ConfigKeyError

# ---------------------------------------------------------------------------------------------------------------
# Item 8: atomically written files get the umask's mode


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_writes_get_the_umask_mode(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "result.json", "{}")
        atomic_torch_save({"x": 1}, tmp_path / "checkpoints" / "last.pt")
        with open(tmp_path / "plain.txt", "w") as fh:  # what the user expects: a plain open()'s mode
            fh.write("x")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for name in ("result.json", "checkpoints/last.pt", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


# ---------------------------------------------------------------------------------------------------------------
# Item 5: numeric ranges


def test_bounded_field_carries_its_range_and_is_checked() -> None:
    @dataclasses.dataclass
    class Cfg:
        coef: float = bounded(1.0, ge=0.0)
        ratio: float = bounded(0.5, gt=0.0, lt=1.0)
        sizes: list[int] = bounded(default_factory=lambda: [4, 4], ge=1)
        free: float = -3.0

    (coef, ratio, sizes, _) = dataclasses.fields(Cfg)
    assert dict(coef.metadata) == {"ge": 0.0} and dict(ratio.metadata) == {"gt": 0.0, "lt": 1.0}
    assert Cfg().sizes == [4, 4] and Cfg().sizes is not Cfg().sizes
    check_ranges(Cfg(coef=0.0, ratio=0.999, sizes=[1], free=-1e9))  # in range: no error
    cases = {
        "x.coef = -0.1 is out of range: it must be >= 0": Cfg(coef=-0.1),
        "x.ratio = 1.0 is out of range: it must be > 0 and < 1": Cfg(ratio=1.0),
        "x.ratio = nan is out of range": Cfg(ratio=math.nan),
        "x.sizes = [4, 0] (entry 0) is out of range: it must be >= 1": Cfg(sizes=[4, 0]),
    }
    for message, cfg in cases.items():
        with pytest.raises(ConfigKeyError) as err:
            check_ranges(cfg, "x")
        assert str(err.value).startswith(message), str(err.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("rollout.horizon=0", "rollout.horizon = 0 is out of range: it must be >= 1"),
        ("rollout.horizon=-5", "rollout.horizon = -5 is out of range"),
        ("batch.real_ratio=1.5", "batch.real_ratio = 1.5 is out of range: it must be >= 0 and < 1"),
        ("batch.real_ratio=-0.5", "batch.real_ratio = -0.5 is out of range"),
        ("batch.size=0", "batch.size = 0 is out of range: it must be >= 2"),
        ("batch.size=-3", "batch.size = -3 is out of range"),
        ("eval.episodes=-1", "eval.episodes = -1 is out of range: it must be >= 0"),
        ("steps=0", "steps = 0 is out of range: it must be >= 1"),
        ("steps=-5", "steps = -5 is out of range"),
        ("learner.gamma=1.0", "learner.gamma = 1.0 is out of range: it must be >= 0 and < 1"),
        ("penalty.coef=-1", "penalty.coef = -1.0 is out of range: it must be >= 0"),
        ("dynamics.elites=0", "dynamics.elites = 0 is out of range: it must be >= 1"),
        ("penalty.coef=nan", "penalty.coef = nan is out of range"),
    ],
)
def test_resolving_rejects_values_out_of_range(override: str, message: str) -> None:
    with pytest.raises(ConfigKeyError) as err:
        resolve("mopo", task="hopper-medium-v2", overrides=[override])
    assert str(err.value).startswith(message), str(err.value)


# Numeric keys that may take any value: sentinels and signed quantities (the others are checked by their
# component: hypergrad_sign is ±1, grad_mode 1..3).
UNBOUNDED = {"target_min", "log_std_min", "log_std_max", "logvar_init", "hypergrad_sign", "grad_mode"}


def test_every_numeric_key_declares_a_range() -> None:
    """Engine sections and every registered dynamics, penalty, rule and learner: each int/float key has bounds."""
    classes = {"": TopLevel, **ENGINE_SECTIONS}
    for kind in ("dynamics", "penalty", "rule", "learner"):
        for name in REGISTRY.names(kind):
            cfg_cls = REGISTRY.config_class(kind, name)
            if cfg_cls is not None and dataclasses.is_dataclass(cfg_cls):
                classes[f"{kind} {name}"] = cfg_cls
    missing = []
    for where, cls in classes.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            numeric = hint in (int, float) or typing.get_args(hint) in ((int,), (float,))
            if numeric and f.name not in UNBOUNDED and not {"ge", "gt", "le", "lt"} & set(f.metadata):
                missing.append(f"{where}.{f.name}")
    assert not missing, f"numeric keys without a declared range: {missing}"


# ---------------------------------------------------------------------------------------------------------------
# Item 1: non-finite data is rejected by every loader, naming the file, the key and the first bad row


@pytest.mark.parametrize(("key", "row", "value"), [("observations", 7, np.nan), ("rewards", 3, np.inf),
                                                    ("next_observations", 12, -np.inf), ("actions", 0, np.nan)])
def test_d4rl_loader_rejects_non_finite_values(tmp_path: Path, key: str, row: int, value: float) -> None:
    import h5py

    path = tmp_path / "hopper_medium-v2.hdf5"
    write_d4rl_hdf5(path)
    with h5py.File(path, "r+") as f:
        data = f[key][()]
        data[row] = value  # the whole row of a 2-d key, one entry of rewards
        data[row + 2] = value
        del f[key]
        f.create_dataset(key, data=data)
    with pytest.raises(DatasetError) as err:
        load_d4rl_hdf5(path)
    message = str(err.value)
    assert message.startswith(f"{path}: '{key}' holds a non-finite value")
    assert f"at row {row} (2 row(s) in all)" in message


def test_neorl_loader_rejects_non_finite_values(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    truth = write_neorl_npz(path, lengths=(20, 10))
    arrays = {k: truth[k] for k in ("obs", "next_obs", "action", "reward", "done", "index")}
    arrays["reward"] = arrays["reward"].copy()
    arrays["reward"][17, 0] = np.nan
    np.savez(path, **arrays)
    with pytest.raises(DatasetError, match=rf"^{path}: 'reward' holds a non-finite value \(nan\) at row 17 "):
        load_neorl_npz(path)


def test_minari_loader_rejects_non_finite_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.fixtures import write_minari_dataset
    from zoo.data.minari_io import load_minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    write_minari_dataset("zoo/nan/finite-v0")
    load_minari("zoo/nan/finite-v0")  # the fixture itself is finite
    import minari

    dataset = minari.load_dataset("zoo/nan/finite-v0")
    data_file = next(Path(dataset.storage.data_path).glob("*.h*5"))
    import h5py

    with h5py.File(data_file, "r+") as f:
        rewards = f["episode_1/rewards"]
        values = rewards[()]
        values[2] = np.nan
        rewards[...] = values
    with pytest.raises(DatasetError, match=r"'reward' holds a non-finite value \(nan\) at row 7 "):
        load_minari("zoo/nan/finite-v0")  # episode 0 has 5 steps: its row 2 is flat row 7


# ---------------------------------------------------------------------------------------------------------------
# Item 4: the run-directory lock


def test_run_lock_refuses_a_second_writer_and_names_the_owner(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        owner = (tmp_path / ".lock").read_text()
        assert owner.startswith(f"pid {os.getpid()} on host {socket.gethostname()}")
        with pytest.raises(RunLockedError) as err, run_lock(tmp_path):
            pass
        assert f"being written by another process (pid {os.getpid()} on host" in str(err.value)
    assert (tmp_path / ".lock").read_text() == ""  # released: free for the next writer
    with run_lock(tmp_path):
        pass


def test_run_lock_takes_over_a_stale_lock(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text("pid 999999 on host gone, since 2020-01-01 00:00:00")  # no flock held
    said = []
    with run_lock(tmp_path, log=said.append):
        assert (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()}")
    assert len(said) == 1 and "stale lock" in said[0] and "pid 999999 on host gone" in said[0]


# ---------------------------------------------------------------------------------------------------------------
# Item 7: a corrupt pretraining cache entry is retrained with a warning naming it


def _tiny_dynamics():
    cfg = resolve("mopo", overrides=["dynamics.hidden=[16]", "dynamics.weight_decay=[1e-5, 1e-5]",
                                     "dynamics.max_epochs=1", "dynamics.ensemble=3", "dynamics.elites=2"])
    return cfg.dynamics


@pytest.mark.parametrize("damage", ["garbage", "flipped_byte", "no_meta"])
def test_corrupt_cache_entry_is_retrained_with_a_warning(tmp_path: Path, damage: str) -> None:
    data, spec, dyn = hopper_shaped_rows(300), HopperShapedTask().spec(), _tiny_dynamics()
    args = (dyn, data, spec, torch.device("cpu"), 0, False, tmp_path)
    first, _, key, cached = pretrained_dynamics(*args)
    assert cached is False
    path = tmp_path / "dynamics" / key / "model.pt"
    meta = json.loads((path.parent / "meta.json").read_text())
    assert len(meta["sha256"]) == 64
    if damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint")
    elif damage == "flipped_byte":  # still a loadable file, with one weight changed: only the checksum notices
        raw = bytearray(path.read_bytes())
        raw[-200] ^= 0x01
        path.write_bytes(bytes(raw))
    else:
        (path.parent / "meta.json").unlink()  # a crash between the two writes
    with pytest.warns(UserWarning, match=f"pretrained ensemble {path} is corrupt"):
        again, _, key2, cached2 = pretrained_dynamics(*args)
    assert key2 == key and cached2 is False
    for name, value in first.state_dict().items():  # retrained from the same seed: the same model
        assert torch.equal(value, again.state_dict()[name]), name
    _, _, _, cached3 = pretrained_dynamics(*args)  # the repaired entry loads without a warning
    assert cached3 is True


# ---------------------------------------------------------------------------------------------------------------
# Item 10: resume bookkeeping


RESUME = [
    "steps=400",
    "log_every=50",
    "checkpoint_every=0",
    "eval.episodes=0",
    'device="cpu"',
    "dynamics.hidden=[16, 16]",
    "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]",
    "dynamics.max_epochs=1",
    "learner.hidden=[16, 16]",
    "rollout.every=100",
    "rollout.batch=32",
    "batch.size=32",
]


def _trainer(run_dir: Path, cache: Path) -> Trainer:
    cfg = resolve("mopo", overrides=RESUME)
    trainer = Trainer(cfg, HopperShapedTask(), run_dir, cache, progress=False, data=hopper_shaped_rows(500))
    trainer.setup()
    return trainer


def _metrics(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("sps", None)
        line.pop("pretrain/cached", None)
    return lines


@pytest.mark.parametrize("stop_after", [200, 230])  # exactly at a rollout step (200 % 100 == 0), and between
def test_resumed_run_equals_an_uninterrupted_one(tmp_path: Path, stop_after: int) -> None:
    cache = tmp_path / "cache"
    whole = _trainer(tmp_path / "whole", cache)
    whole_summary = whole.train()

    first = _trainer(tmp_path / "split", cache)
    update = first.learner.update_pop  # SAC trains a run as a population of one

    def update_then_stop(*args, **kwargs):  # what a Ctrl-C or SIGTERM does: stop after this step
        out = update(*args, **kwargs)
        if first.step + 1 == stop_after:
            first._stop_requested = True
        return out

    first.learner.update_pop = update_then_stop
    with pytest.raises(KeyboardInterrupt, match=f"stopped at step {stop_after}"):
        first.train()
    (tmp_path / "split" / "metrics.jsonl").open("a").write(  # lines a killed process wrote after its checkpoint
        json.dumps({"step": stop_after, "kind": "rollout", "stale": True}) + "\n"
        + json.dumps({"step": stop_after + 1, "kind": "train", "stale": True}) + "\n"
    )
    segment_wall = torch.load(first.checkpoint_path, weights_only=False)["wall_s"]
    resumed = _trainer(tmp_path / "split", cache)
    summary = resumed.train(resume=True)

    assert _metrics(tmp_path / "split") == _metrics(tmp_path / "whole")  # no duplicate rollout line, same values
    rollouts = [m["step"] for m in _metrics(tmp_path / "split") if m["kind"] == "rollout"]
    assert rollouts == [0, 100, 200, 300]
    for name, value in whole.learner.state_dict()["critic"].items():
        assert torch.equal(value, resumed.learner.state_dict()["critic"][name]), name
    for name, value in whole.learner.state_dict()["actor"].items():
        assert torch.equal(value, resumed.learner.state_dict()["actor"][name]), name
    assert torch.equal(whole.model_buffer.storage["obs"], resumed.model_buffer.storage["obs"])
    assert summary["steps"] == whole_summary["steps"] == 400
    assert summary["wall_s"] > segment_wall > 0  # both segments counted
    final_wall = torch.load(resumed.checkpoint_path, weights_only=False)["wall_s"]  # written at step 400
    again = _trainer(tmp_path / "split", cache).train(resume=True)  # --resume of a finished run: nothing to do
    assert again["steps"] == 400 and again["wall_s"] >= final_wall > segment_wall  # not reset to the last few ms
    assert summary["score"] is None and whole_summary["score"] is None  # nothing evaluated: no score


def test_a_run_that_evaluated_nothing_never_enters_a_leaderboard(tmp_path: Path) -> None:
    """``eval.episodes = 0`` gives ``"score": null``; such a run, even the newest of its cell, neither shows as nan
    nor displaces the scored run (issue 11, item 5: it used to replace valid runs in the cell)."""
    from tests.runs_tree import make_run
    from zoo.bench.leaderboard import build_leaderboards
    from zoo.results import load_runs

    make_run(tmp_path, "quick", "pendulum-random", "mopo", 0, 55.0, setting=None)
    newer = make_run(tmp_path, "quick", "pendulum-random", "mopo", 0, 1.0, setting=None, config_hash="ba9876543210",
                     age=60)
    result = json.loads((newer / "result.json").read_text())
    result.update(score=None, score_evals=0)
    (newer / "result.json").write_text(json.dumps(result))
    os.utime(newer / "result.json", (1_700_000_600, 1_700_000_600))
    (board,) = build_leaderboards(load_runs(tmp_path), reps=50, with_curves=False)
    cell = board.cells[("pendulum-random", "mopo")]
    assert cell.n == 1 and cell.scores == {0: 55.0}
