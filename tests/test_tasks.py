"""Tasks: names, eval envs, specs, loading checks (evaluation.md §1-3)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.fixtures import write_d4rl_hdf5, write_neorl_npz
from zoo.data.errors import DatasetError, DatasetUnavailableError
from zoo.protocols import EnvSpec
from zoo.registry import REGISTRY
from zoo.tasks.suites import Suite, SuiteError, load_suite
from zoo.tasks.task import TASKS, get_task, safe_name, task_names

DIMS = {"hopper": (11, 3), "halfcheetah": (17, 6), "walker2d": (17, 6), "ant": (27, 8), "pendulum": (3, 1)}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "zoo"))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    return tmp_path


@pytest.mark.parametrize("suite", ["d4rl", "neorl", "quick"])
def test_every_task_resolves_and_its_env_builds(suite):
    for name in task_names(suite):
        task = get_task(name)
        obs_dim, act_dim = DIMS[task.family]
        if task.source == "neorl":
            obs_dim += 1  # the x position is kept
        spec = task.spec()
        assert isinstance(spec, EnvSpec)
        assert (spec.obs_dim, spec.act_dim) == (obs_dim, act_dim), name
        env = task.make_env()
        obs, _ = env.reset(seed=0)
        assert obs.shape == (obs_dim,)
        env.close()


def test_eval_env_ids_and_kwargs():
    t = get_task("hopper-medium-v2")
    assert (t.env_id, t.env_kwargs, t.termination, t.source) == ("Hopper-v4", {}, "hopper", "d4rl")
    n = get_task("neorl-walker2d-high")
    assert n.env_id == "Walker2d-v4"
    assert n.env_kwargs == {"exclude_current_positions_from_observation": False}
    assert n.termination == "walker2d_neorl" and n.loader["num_trajectories"] == 1000
    assert get_task("neorl-halfcheetah-low").termination == "halfcheetah_neorl"
    p = get_task("pendulum-random")
    assert (p.env_id, p.termination, p.source, p.spec().act_high) == ("Pendulum-v1", "never", "local", 2.0)
    m = get_task("mujoco/hopper/medium-v0")
    assert m.source == "minari" and m.dataset_id == "mujoco/hopper/medium-v0"
    assert set(task_names("d4rl")) <= set(TASKS) and len(task_names("d4rl")) == 12
    assert len(task_names("neorl")) == 9 and len(task_names("quick")) == 4
    assert "ant-medium-v2" in TASKS and "hopper-full-replay-v2" in TASKS


def test_vector_env_runs_episodes_in_parallel():
    task = get_task("pendulum-random")
    venv = task.make_vector_env(3, seed=0)
    obs, _ = venv.reset(seed=[0, 1, 2])
    assert obs.shape == (3, 3)
    obs2, rew, term, trunc, _ = venv.step(np.zeros((3, 1), dtype=np.float32))
    assert rew.shape == (3,) and obs2.shape == (3, 3)
    venv.close()
    again = task.make_vector_env(3, seed=0)
    obs_b, _ = again.reset(seed=[0, 1, 2])
    np.testing.assert_array_equal(obs, obs_b)
    again.close()
    with pytest.raises(ValueError, match="autoreset_mode"):
        task.make_vector_env(2, autoreset_mode="sometimes")


def test_unknown_task_lists_close_matches_and_suites():
    with pytest.raises(KeyError) as info:
        get_task("hoper-medium-v2")
    msg = str(info.value)
    assert "hopper-medium-v2" in msg and "d4rl" in msg and "quick" in msg


def test_safe_name():
    assert safe_name("mujoco/hopper/medium-v0") == "mujoco__hopper__medium-v0"
    assert safe_name("hopper-medium-v2") == "hopper-medium-v2"
    assert "/" not in safe_name("a/b c:d") and " " not in safe_name("a/b c:d")


def test_suites_registered_and_loaded():
    names = REGISTRY.names("suite")
    assert {"d4rl", "d4rl-noisy", "neorl", "minari", "quick"} <= set(names)
    assert REGISTRY.describe("suite", "quick")
    noisy = REGISTRY.create("suite", "d4rl-noisy")
    assert isinstance(noisy, Suite)
    d4rl = load_suite("d4rl")
    assert noisy.task_names == d4rl.task_names and noisy.noise == "relative_delta"
    assert noisy.noise_scale == 0.05 and noisy.base == "d4rl" and noisy.table_suite == "d4rl"
    assert d4rl.noise == "none" and [t.name for t in d4rl.tasks] == list(d4rl.task_names)
    assert len(load_suite("minari")) == 12


def test_unknown_suite_lists_suites():
    with pytest.raises(KeyError) as info:
        load_suite("d4rl-nosy")
    assert "d4rl-noisy" in str(info.value) and "quick" in str(info.value)


def test_user_suite_from_config_dir(tmp_path, monkeypatch):
    from zoo import paths
    from zoo.tasks import suites

    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.toml").write_text('description = "mine"\nbase = "quick"\n')
    (tmp_path / "suites" / "bad.toml").write_text('tasks = ["nope-v2"]\n')
    monkeypatch.setattr(paths, "_USER_CONFIG_DIRS", [tmp_path])
    mine = load_suite("mine")
    assert mine.task_names == load_suite("quick").task_names
    assert "mine" in suites.register_suites() and "mine" in REGISTRY.names("suite")
    with pytest.raises(SuiteError, match="nope-v2"):
        load_suite("bad")


def test_missing_dataset_says_how_to_get_it(cache):
    task = get_task("hopper-medium-v2")
    assert task.dataset_path() is None
    with pytest.raises(DatasetUnavailableError, match="zoo data download hopper-medium-v2"):
        task.load()
    with pytest.raises(DatasetUnavailableError, match="zoo data download"):
        get_task("neorl-hopper-low").load()
    with pytest.raises(DatasetUnavailableError, match="zoo data download"):
        get_task("mujoco/hopper/medium-v0").load()


def test_load_d4rl_file_from_cache(cache):
    truth = write_d4rl_hdf5(cache / "d4rl" / "hopper_medium-v2.hdf5", obs_dim=11, act_dim=3)
    task = get_task("hopper-medium-v2")
    assert task.dataset_path() is not None
    data = task.load()
    assert len(data) == truth["rewards"].shape[0] and data.obs_dim == 11
    assert data.meta["task"] == "hopper-medium-v2"
    assert task.fingerprint_source().startswith("d4rl:hopper-medium-v2:")


def test_shape_mismatch_names_both_shapes(cache):
    write_d4rl_hdf5(cache / "zoo" / "d4rl" / "walker2d_medium-v2.hdf5", obs_dim=11, act_dim=3)
    with pytest.raises(DatasetError) as info:
        get_task("walker2d-medium-v2").load()
    msg = str(info.value)
    assert "(11,)" in msg and "(3,)" in msg and "(17,)" in msg and "(6,)" in msg and "Walker2d-v4" in msg


def test_load_neorl_file_from_cache(cache):
    from zoo.data.neorl import neorl_dir, neorl_filename

    path = neorl_dir() / neorl_filename("Hopper-v3", "low", 1000)
    truth = write_neorl_npz(path, lengths=(1000, 37, 12), obs_dim=12, act_dim=3)
    task = get_task("neorl-hopper-low")
    with pytest.raises(DatasetError, match="1000 trajectories"):
        task.load()  # the tiny fixture holds 3 trajectories; the task asks for 1000
    small = dataclasses.replace(task, loader={**task.loader, "num_trajectories": 3})
    write_neorl_npz(neorl_dir() / neorl_filename("Hopper-v3", "low", 3), lengths=(1000, 37, 12), obs_dim=12)
    data = small.load()
    assert len(data) == int(np.sum(truth["lengths"])) and data.obs_dim == 12
    assert int(data.terminal.sum()) == 2 and int(data.timeout.sum()) == 1


def test_minari_task_uses_the_recorded_env_and_reference(cache):
    from tests.fixtures import write_minari_dataset

    task = get_task("mujoco/hopper/medium-v0")
    assert task.spec().obs_dim == 11  # before download: the published env (Hopper-v5)
    with pytest.raises(DatasetUnavailableError):
        _ = task.reference
    write_minari_dataset("mujoco/hopper/medium-v0", env_id="Pendulum-v1", ref_scores=(-1500.0, -150.0))
    assert (task.reference.min, task.reference.max) == (-1500.0, -150.0)
    assert (task.spec().obs_dim, task.spec().act_dim) == (3, 1)  # the env recorded in the dataset
    data = task.load()
    assert data.obs_dim == 3 and task.make_env().spec.id == "Pendulum-v1"
