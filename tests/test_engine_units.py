"""Engine pieces with exact expectations: ring buffer, observation normalizer, branched rollouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoo.data.transitions import Transitions
from zoo.engine.buffer import RingBuffer
from zoo.engine.evaluate import eval_seed
from zoo.engine.normalizer import ObsNormalizer
from zoo.engine.rollout import DivergenceError, model_rollout
from zoo.protocols import ModelStep


def rows(start: int, n: int) -> dict[str, torch.Tensor]:
    v = torch.arange(start, start + n, dtype=torch.float32).unsqueeze(-1)
    return {"obs": v.repeat(1, 2), "act": v, "reward": v, "next_obs": v.repeat(1, 2) + 1, "terminal": v * 0}


def test_ring_buffer_is_fifo_with_wraparound() -> None:
    buf = RingBuffer(5, obs_dim=2, act_dim=1, device="cpu")
    buf.add(**rows(0, 3))
    assert len(buf) == 3
    buf.add(**rows(3, 4))  # 0..6 written, capacity 5: rows 2..6 remain
    assert len(buf) == 5
    assert sorted(buf.storage["reward"][:, 0].tolist()) == [2, 3, 4, 5, 6]
    buf.add(**rows(100, 12))  # larger than the buffer: keeps the newest 5
    assert sorted(buf.storage["reward"][:, 0].tolist()) == [107, 108, 109, 110, 111]
    sample = buf.sample(50, torch.Generator().manual_seed(0))
    assert sample["obs"].shape == (50, 2) and set(sample["reward"][:, 0].tolist()) <= {107, 108, 109, 110, 111}
    assert torch.equal(sample["next_obs"], sample["obs"] + 1)  # rows stay aligned across fields


def test_ring_buffer_state_round_trip() -> None:
    a = RingBuffer(8, 2, 1, "cpu")
    a.add(**rows(0, 11))
    b = RingBuffer(8, 2, 1, "cpu")
    b.load_state_dict(a.state_dict())
    assert (b.size, b.ptr) == (a.size, a.ptr)
    assert torch.equal(b.storage["reward"], a.storage["reward"])


def test_a_saved_buffer_holds_its_rows_not_its_capacity(tmp_path) -> None:
    """torch.save writes a view's whole storage: a state of views would carry the full capacity, and in a population
    (zoo.engine.population.PopulationBuffer) every run's buffer."""
    from zoo.engine.population import PopulationBuffer

    pop = PopulationBuffer(4, 10_000, 2, 1, torch.device("cpu"))
    pop.members[1].add(**rows(0, 3))
    path = tmp_path / "buffer.pt"
    torch.save(pop.members[1].state_dict(), path)
    assert path.stat().st_size < 20_000  # 3 rows; the stacked storage is 4 x 10,000 x 7 floats = 1.1 MB
    state = torch.load(path, weights_only=False)
    assert state["size"] == 3 and torch.equal(state["obs"], pop.storage["obs"][1, :3])


def test_empty_buffer_sampling_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="empty model buffer"):
        RingBuffer(4, 2, 1, "cpu").sample(2)


def test_normalizer_round_trip_and_termination_wrapping() -> None:
    rng = np.random.default_rng(0)
    obs = rng.normal(loc=3.0, scale=2.0, size=(200, 2))
    data = Transitions.from_numpy(
        obs=obs, act=np.zeros((200, 1)), reward=np.zeros(200), next_obs=obs + 1, terminal=np.zeros(200),
        timeout=np.zeros(200),
    )
    norm = ObsNormalizer.from_data(data, enabled=True)
    z = norm.normalize(data.obs)
    expected = (obs - obs.mean(0)) / (obs.std(0) + 1e-3)
    np.testing.assert_allclose(z.numpy(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(norm.unnormalize(z), data.obs, rtol=1e-5, atol=1e-5)
    applied = norm.apply(data)
    torch.testing.assert_close(applied.next_obs, norm.normalize(data.next_obs))

    def raw_done(o: torch.Tensor, a: torch.Tensor, o2: torch.Tensor) -> torch.Tensor:
        return (o2[:, :1] > 4.0).float()

    wrapped = norm.wrap_termination(raw_done)
    expected_done = raw_done(data.obs, data.act, data.next_obs)
    torch.testing.assert_close(wrapped(z, data.act, norm.normalize(data.next_obs)), expected_done)
    off = ObsNormalizer.from_data(data, enabled=False)
    assert off.apply(data) is data and off.wrap_termination(raw_done) is raw_done


class CountingModel:
    """A deterministic stand-in dynamics: s' = s + 1, r = s[0]; one 'member'."""

    def step(self, obs: torch.Tensor, act: torch.Tensor, generator=None) -> ModelStep:
        b = obs.shape[0]
        nxt = obs + 1
        y = torch.cat([nxt - obs, obs[:, :1]], -1)
        return ModelStep(
            obs=obs, act=act, next_obs=nxt, reward=obs[:, :1].clone(), terminal=torch.zeros(b, 1),
            member=torch.zeros(b, dtype=torch.long), mean=y[None], logvar=torch.zeros_like(y)[None],
            log_prob=torch.zeros(b),
        )


class ZeroPolicy:
    def act(self, obs, deterministic=False, generator=None):
        a = torch.zeros(obs.shape[0], 1)
        return a, a, torch.zeros(obs.shape[0], 1)


def test_rollout_stores_terminal_rows_and_stops_their_branches() -> None:
    start = torch.tensor([[0.0, 0.0], [2.0, 0.0], [5.0, 0.0]])

    def done_above_3(o, a, o2):  # branch starting at s: terminates when s' > 3
        return (o2[:, :1] > 3.0).float()

    buf = RingBuffer(100, 2, 1, "cpu")

    def penalty(step, ctx):
        return torch.full_like(step.reward, 0.5)

    stats = model_rollout(CountingModel(), ZeroPolicy(), start, 5, done_above_3, buf, penalty=penalty)
    # branch 0: 0->1->2->3->4(done) = 4 rows; branch 1: 2->3->4(done) = 2 rows; branch 2: 5->6(done) = 1 row
    assert stats.transitions == 7 and len(buf) == 7
    stored = buf.storage
    assert stored["terminal"][:7, 0].sum().item() == 3
    obs0 = stored["obs"][:7, 0]
    torch.testing.assert_close(stored["reward"][:7, 0], obs0 - 0.5)  # raw reward s[0] minus the penalty
    assert stats.penalty_mean == pytest.approx(0.5)


def test_rollout_with_non_finite_model_output_raises() -> None:
    class NanModel(CountingModel):
        def step(self, obs, act, generator=None):
            s = super().step(obs, act)
            s.next_obs = s.next_obs * float("nan")
            return s

    buf = RingBuffer(10, 2, 1, "cpu")
    with pytest.raises(DivergenceError, match="non-finite"):
        model_rollout(NanModel(), ZeroPolicy(), torch.zeros(2, 2), 2, lambda o, a, o2: torch.zeros(o.shape[0], 1), buf)


def test_eval_seeds_are_distinct() -> None:
    seeds = {eval_seed(s, e, k) for s in range(3) for e in range(20) for k in range(10)}
    assert len(seeds) == 3 * 20 * 10
