"""Transitions: fingerprint, statistics, episodes, seeded sampling, device moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data.transitions import Transitions


def make(n: int = 10, seed: int = 0) -> Transitions:
    rng = np.random.default_rng(seed)
    terminal = np.zeros(n)
    timeout = np.zeros(n)
    terminal[3] = 1  # episode 0: rows 0..3
    timeout[6] = 1  # episode 1: rows 4..6; episode 2: rows 7..9 (trailing)
    return Transitions.from_numpy(
        obs=rng.normal(size=(n, 3)),
        act=rng.uniform(-1, 1, size=(n, 2)),
        reward=np.arange(n, dtype=np.float64),
        next_obs=rng.normal(size=(n, 3)),
        terminal=terminal,
        timeout=timeout,
    )


def test_shapes_and_dtypes() -> None:
    t = make()
    assert t.reward.shape == (10, 1) and t.terminal.shape == (10, 1) and t.timeout.shape == (10, 1)
    assert all(v.dtype == torch.float32 for v in t.tensors().values())
    assert (t.obs_dim, t.act_dim, len(t)) == (3, 2, 10)


def test_mismatched_rows_are_rejected() -> None:
    t = make()
    with pytest.raises(ValueError, match="rows"):
        Transitions(t.obs, t.act[:5], t.reward, t.next_obs, t.terminal, t.timeout)


def test_fingerprint_is_content_hash() -> None:
    a, b = make(seed=0), make(seed=0)
    assert a.fingerprint() == b.fingerprint()
    b.reward[0, 0] += 1.0
    assert a.fingerprint() != b.fingerprint()
    assert make(seed=1).fingerprint() != a.fingerprint()


def test_episode_returns_follow_terminal_and_timeout_boundaries() -> None:
    t = make()
    returns = t.episode_returns()
    assert returns.tolist() == [0 + 1 + 2 + 3, 4 + 5 + 6, 7 + 8 + 9]
    s = t.summary()
    assert (s["episodes"], s["terminals"], s["timeouts"]) == (3, 1, 1)
    assert s["return_mean"] == pytest.approx(np.mean([6, 15, 24]))


def test_obs_stats() -> None:
    t = make(n=50)
    mean, std = t.obs_stats()
    np.testing.assert_allclose(mean.numpy(), t.obs.numpy().mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(std.numpy(), t.obs.numpy().std(0), rtol=1e-5)


def test_seeded_sampling_is_reproducible_and_uniform() -> None:
    t = make(n=10)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(t.sample_index(64, g1), t.sample_index(64, g2))
    counts = torch.bincount(t.sample_index(20_000, torch.Generator().manual_seed(0)), minlength=10)
    assert counts.min() > 1700 and counts.max() < 2300  # each row ~2000 times
    batch = t.sample(5, torch.Generator().manual_seed(1))
    assert len(batch) == 5 and batch.obs.shape == (5, 3)


def test_device_move_returns_same_object_when_already_there() -> None:
    t = make()
    assert t.to("cpu") is t
    meta_copy = t.to(torch.device("cpu"))
    assert meta_copy.obs.device.type == "cpu"
