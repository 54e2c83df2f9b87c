"""Local behaviour-data collection into Minari datasets (DESIGN.md, "Data and tasks")."""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest

from zoo.data.collect import (
    QUALITIES,
    REPLAY_QUALITIES,
    BehaviourPolicy,
    RandomPolicy,
    collect_dataset,
    collect_quality,
    get_quality,
    load_local_dataset,
    local_dataset_path,
    local_root,
    read_local_metadata,
)
from zoo.tasks.references import PENDULUM_REFERENCE
from zoo.tasks.task import get_task


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_DATA", str(tmp_path / "zoo"))
    monkeypatch.delenv("MINARI_DATASETS_PATH", raising=False)
    return tmp_path


def test_random_policy_is_seeded_and_in_bounds():
    space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    a = RandomPolicy(space, seed=3).act(np.zeros((4, 3)))
    b = RandomPolicy(space, seed=3).act(np.zeros((4, 3)))
    assert a.shape == (4, 1) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert np.all(np.abs(a) <= 2.0)
    assert isinstance(RandomPolicy(space), BehaviourPolicy)


def test_collect_is_reproducible_and_fingerprinted(cache):
    p1 = collect_quality("Pendulum-v1", "random", episodes=5, dataset_id="zoo/pendulum/a-v0", seed=0)
    p2 = collect_quality("Pendulum-v1", "random", episodes=5, dataset_id="zoo/pendulum/b-v0", seed=0)
    p3 = collect_quality("Pendulum-v1", "random", episodes=5, dataset_id="zoo/pendulum/c-v0", seed=1)
    assert p1 == local_root() / "zoo/pendulum/a-v0" and p1.is_dir() and p2.is_dir() and p3.is_dir()
    m1, m2, m3 = (read_local_metadata(f"zoo/pendulum/{x}-v0") for x in "abc")
    assert m1["zoo_fingerprint"] == m2["zoo_fingerprint"] != m3["zoo_fingerprint"]
    data = load_local_dataset("zoo/pendulum/a-v0")
    assert data.fingerprint() == m1["zoo_fingerprint"]
    assert len(data) == 5 * 200 and int(data.timeout.sum()) == 5 and int(data.terminal.sum()) == 0
    assert m1["ref_min_score"] == PENDULUM_REFERENCE.min and m1["ref_max_score"] == PENDULUM_REFERENCE.max
    assert m1["zoo_quality"] == "random" and m1["zoo_seed"] == 0 and m1["total_episodes"] == 5
    assert "MINARI_DATASETS_PATH" not in os.environ  # the Minari path was set for the call only
    with pytest.raises(FileExistsError, match="overwrite"):
        collect_quality("Pendulum-v1", "random", episodes=2, dataset_id="zoo/pendulum/a-v0")
    collect_quality("Pendulum-v1", "random", episodes=2, dataset_id="zoo/pendulum/a-v0", overwrite=True)
    assert read_local_metadata("zoo/pendulum/a-v0")["total_episodes"] == 2
    assert not [p for p in local_root().iterdir() if p.name.startswith(".tmp")]


class _Exploding:
    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0

    def act(self, obs: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls > 250:
            raise RuntimeError("policy crashed")
        return np.zeros((obs.shape[0], 1), dtype=np.float32)


def test_failed_collection_leaves_nothing(cache):
    with pytest.raises(RuntimeError, match="policy crashed"):
        collect_dataset("Pendulum-v1", _Exploding(), episodes=3, dataset_id="zoo/pendulum/broken-v0")
    assert local_dataset_path("zoo/pendulum/broken-v0") is None
    assert not (local_root() / "zoo/pendulum/broken-v0").exists()
    assert not [p for p in local_root().iterdir() if p.name.startswith(".tmp")]


def test_failure_while_writing_leaves_nothing(cache, monkeypatch):
    import minari

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(minari, "create_dataset_from_buffers", broken)
    with pytest.raises(OSError, match="disk full"):
        collect_quality("Pendulum-v1", "random", episodes=1, dataset_id="zoo/pendulum/x-v0")
    assert not (local_root() / "zoo/pendulum/x-v0").exists()
    assert not [p for p in local_root().iterdir() if p.name.startswith(".tmp")]


def test_qualities():
    assert set(QUALITIES) == {"random", "medium", "expert"}
    assert set(REPLAY_QUALITIES) == {"medium-replay"}
    assert get_quality("medium-replay") is REPLAY_QUALITIES["medium-replay"]
    available = "available: expert, medium, medium-replay, random"
    with pytest.raises(ValueError, match=f"unknown quality 'legendary'; {available}"):
        get_quality("legendary")


def test_quick_task_collects_on_first_use_and_caches(cache, monkeypatch):
    import dataclasses

    task = get_task("pendulum-random")
    small = dataclasses.replace(task, loader={**task.loader, "episodes": 3})
    assert small.dataset_path() is None
    data = small.load()
    path = small.dataset_path()
    assert path is not None and len(data) == 600
    meta = json.loads((path / "data" / "metadata.json").read_text())
    assert data.fingerprint() == meta["zoo_fingerprint"]
    assert small.reference.min == PENDULUM_REFERENCE.min
    mtime = (path / "data" / "metadata.json").stat().st_mtime_ns
    again = small.load()  # cached: not collected again
    assert again.fingerprint() == data.fingerprint()
    assert (path / "data" / "metadata.json").stat().st_mtime_ns == mtime


def _sampled_policy(seed: int = 0):
    """A SampledPolicy around a freshly initialised Pendulum-sized actor (wide enough to spread its actions)."""
    import torch

    from zoo.learners.networks import TanhGaussianActor
    from zoo.learners.online import SampledPolicy

    torch.manual_seed(seed)
    return SampledPolicy(TanhGaussianActor(3, 1, [16, 16], act_scale=2.0))


def _stored_log_probs(dataset_id: str) -> list[np.ndarray]:
    import minari

    from zoo.data.collect import minari_datasets_path

    with minari_datasets_path(local_root()):
        dataset = minari.load_dataset(dataset_id)
        return [np.asarray(ep.infos["action_log_probs"]) for ep in dataset.iterate_episodes()]


def test_sampled_collection_stores_log_probs_consistent_with_the_policy(cache):
    """Protocol 1: sampled actions spread around the policy's mean action, and the stored log π(a|s) is the
    policy's own density of each stored action (sac.md §1's tanh-corrected density)."""
    import torch

    from zoo.data.collect import COLLECTION_PROTOCOL, PROTOCOL_KEY

    policy = _sampled_policy()
    collect_dataset("Pendulum-v1", policy, episodes=2, dataset_id="zoo/pendulum/sampled-v1", seed=4, quality="medium")
    data = load_local_dataset("zoo/pendulum/sampled-v1")
    log_probs = np.concatenate(_stored_log_probs("zoo/pendulum/sampled-v1"))
    assert log_probs.shape == (len(data),) and np.isfinite(log_probs).all()
    obs, act = data.obs, data.act
    with torch.no_grad():
        mean_action = 2.0 * torch.tanh(policy.actor(obs)[0])
        inside = (act.abs() < 0.999 * 2.0)[:, 0]
        u = torch.atanh(act[inside].double() / 2.0).float()
        expected = policy.actor.log_prob(obs[inside], u)[:, 0].double().numpy()
    assert float((act - mean_action).abs().mean()) > 0.1  # actions are samples, not the mean action
    assert inside.float().mean() > 0.5
    np.testing.assert_allclose(log_probs[inside.numpy()], expected, rtol=1e-3, atol=1e-3)
    meta = read_local_metadata("zoo/pendulum/sampled-v1")
    assert meta[PROTOCOL_KEY] == COLLECTION_PROTOCOL == data.meta["collection_protocol"]
    assert meta["zoo_fingerprint"] == data.fingerprint()
    # The same seed gives the same samples: collection stays reproducible.
    collect_dataset("Pendulum-v1", _sampled_policy(), episodes=2, dataset_id="zoo/pendulum/again-v1", seed=4)
    torch.testing.assert_close(load_local_dataset("zoo/pendulum/again-v1").act, act, rtol=0, atol=0)


def test_collection_protocol_versions_the_id_and_the_fingerprint(cache):
    from zoo.data.collect import COLLECTION_PROTOCOL, default_dataset_id

    assert default_dataset_id("Pendulum-v1", "medium") == f"zoo/pendulum/medium-v{COLLECTION_PROTOCOL}"
    assert get_task("pendulum-medium").dataset_id == default_dataset_id("Pendulum-v1", "medium")
    collect_quality("Pendulum-v1", "random", episodes=1, dataset_id="zoo/pendulum/r-v1", seed=0)
    data = load_local_dataset("zoo/pendulum/r-v1")
    older = data.select(slice(None))
    older.meta = {k: v for k, v in data.meta.items() if k != "collection_protocol"}  # e.g. a protocol-0 copy
    torch_equal = bool((older.act == data.act).all())
    assert torch_equal and older.fingerprint() != data.fingerprint()
