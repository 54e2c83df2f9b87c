"""Termination functions (dynamics.md §10) against the real Gymnasium v4 environments."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from zoo.dynamics.termination import TERMINATIONS, get_termination, normalized

pytest.importorskip("mujoco")


def as_row(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32)).unsqueeze(0)


def predicted_done(name: str, obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> bool:
    return bool(get_termination(name)(as_row(obs), as_row(act), as_row(next_obs))[0, 0] == 1.0)


def check_against_env(env_id: str, name: str, episodes: int, seed: int, raw_state_ok=None, **kwargs) -> tuple[int, int]:
    """Random actions (scaled up) until termination; every transition must agree with the env's flag.

    ``raw_state_ok(env)`` may exclude transitions whose raw state differs from the clipped observation in a way
    the function cannot see (dynamics.md §10, hopper velocities). Returns (healthy, unhealthy) counts.
    """
    env = gym.make(env_id, **kwargs)
    rng = np.random.default_rng(seed)
    healthy = unhealthy = 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        for _ in range(300):
            act = np.clip(rng.normal(0, 1.5, env.action_space.shape), env.action_space.low, env.action_space.high)
            next_obs, _, terminated, truncated, _ = env.step(act.astype(np.float32))
            if raw_state_ok is None or raw_state_ok(env):
                assert predicted_done(name, obs, act, next_obs) == terminated, (env_id, next_obs, terminated)
                healthy += not terminated
                unhealthy += terminated
            if terminated or truncated:
                break
            obs = next_obs
    env.close()
    return healthy, unhealthy


def hopper_raw_ok(env: gym.Env) -> bool:
    return bool(np.all(np.abs(env.unwrapped.state_vector()[2:]) < 100))


@pytest.mark.parametrize(
    ("env_id", "name", "kwargs", "raw_ok"),
    [
        ("Hopper-v4", "hopper", {}, hopper_raw_ok),
        ("Walker2d-v4", "walker2d", {}, None),
        ("Hopper-v4", "hopper_neorl", {"exclude_current_positions_from_observation": False}, hopper_raw_ok),
        ("Walker2d-v4", "walker2d_neorl", {"exclude_current_positions_from_observation": False}, None),
        ("InvertedPendulum-v4", "inverted_pendulum", {}, None),
        ("InvertedDoublePendulum-v4", "inverted_double_pendulum", {}, None),
    ],
)
def test_agrees_with_env_on_random_rollouts(env_id: str, name: str, kwargs: dict, raw_ok) -> None:
    healthy, unhealthy = check_against_env(env_id, name, episodes=4, seed=0, raw_state_ok=raw_ok, **kwargs)
    assert healthy > 10 and unhealthy >= 3  # both kinds of transitions were checked


@pytest.mark.parametrize(
    ("env_id", "name", "kwargs", "index", "values"),
    [
        # (qpos index to set, values) -> fallen, too high, tilted and upright states
        ("Hopper-v4", "hopper", {}, [1, 2], [(0.5, 0.0), (1.25, 0.5), (1.25, -0.5), (1.25, 0.0)]),
        ("Walker2d-v4", "walker2d", {}, [1, 2], [(0.5, 0.0), (2.5, 0.0), (1.25, 1.5), (1.25, 0.0)]),
        (
            "Hopper-v4",
            "hopper_neorl",
            {"exclude_current_positions_from_observation": False},
            [1, 2],
            [(0.5, 0.0), (1.25, 0.5), (1.25, 0.0)],
        ),
        (
            "Walker2d-v4",
            "walker2d_neorl",
            {"exclude_current_positions_from_observation": False},
            [1, 2],
            [(0.5, 0.0), (1.25, -1.5), (1.25, 0.0)],
        ),
        ("Ant-v4", "ant", {}, [2], [(1.5,), (0.1,), (0.75,)]),
        ("Humanoid-v4", "humanoid", {}, [2], [(0.8,), (2.5,), (1.4,)]),
    ],
)
def test_agrees_with_env_from_set_states(env_id: str, name: str, kwargs: dict, index: list, values: list) -> None:
    env = gym.make(env_id, **kwargs)
    seen = set()
    for vals in values:
        obs, _ = env.reset(seed=0)
        qpos, qvel = env.unwrapped.data.qpos.copy(), env.unwrapped.data.qvel.copy()
        qpos[index] = vals
        env.unwrapped.set_state(qpos, qvel)
        act = np.zeros(env.action_space.shape, dtype=np.float32)
        next_obs, _, terminated, _, _ = env.step(act)
        assert predicted_done(name, obs, act, next_obs) == terminated, (env_id, vals, next_obs[:3], terminated)
        seen.add(terminated)
    env.close()
    assert seen == {True, False}


def test_halfcheetah_never_terminates() -> None:
    neorl = {"exclude_current_positions_from_observation": False}
    for name, kwargs in (("halfcheetah", {}), ("halfcheetah_neorl", neorl)):
        env = gym.make("HalfCheetah-v4", **kwargs)
        obs, _ = env.reset(seed=0)
        rng = np.random.default_rng(0)
        for _ in range(100):
            act = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            next_obs, _, terminated, _, _ = env.step(act)
            assert not terminated and not predicted_done(name, obs, act, next_obs)
            obs = next_obs
        env.close()
    blown_up = torch.zeros(1, 17)
    blown_up[0, 5] = 150.0
    assert get_termination("halfcheetah")(blown_up, blown_up, blown_up).item() == 1.0  # MBPO ±100 convention
    assert get_termination("halfcheetah_neorl")(blown_up, blown_up, blown_up).item() == 0.0


def test_shapes_nan_and_registry() -> None:
    sizes = {"hopper": 11, "hopper_neorl": 12, "walker2d": 17, "walker2d_neorl": 18, "halfcheetah": 17,
             "halfcheetah_neorl": 18, "ant": 27, "humanoid": 45, "inverted_pendulum": 4,
             "inverted_double_pendulum": 11, "never": 3}  # fmt: skip
    assert set(sizes) == set(TERMINATIONS)
    for name, d in sizes.items():
        fn = get_termination(name)
        obs = torch.zeros(5, d)
        act = torch.zeros(5, 2)
        done = fn(obs, act, obs)
        assert done.shape == (5, 1) and done.dtype == torch.float32
        bad = obs.clone()
        bad[1, -1] = float("nan")
        bad[3, 0] = float("inf")
        done = fn(obs, act, bad)
        assert done[1, 0] == 1.0 and done[3, 0] == 1.0, name
    assert torch.all(get_termination("never")(obs, act, torch.full((5, 3), 1e6)) == 0)
    with pytest.raises(KeyError, match="hopper, hopper_neorl"):
        get_termination("hoper")


def test_hopper_mbpo_quirk_is_one_sided() -> None:
    s = torch.zeros(1, 11)
    s[0, 0] = 1.25
    s[0, 5] = -150.0  # a joint angle far below −100: only the two-sided rule catches it
    assert get_termination("hopper")(s, s, s).item() == 1.0
    assert get_termination("hopper", hopper_mbpo_quirk=True)(s, s, s).item() == 0.0
    s[0, 5] = 150.0
    assert get_termination("hopper", hopper_mbpo_quirk=True)(s, s, s).item() == 1.0
    n = torch.zeros(1, 12)
    n[0, 1], n[0, 6] = 1.25, -150.0
    assert get_termination("hopper_neorl")(n, n, n).item() == 1.0
    assert get_termination("hopper_neorl", hopper_mbpo_quirk=True)(n, n, n).item() == 0.0


def test_normalized_wrapper_unnormalizes_first() -> None:
    g = torch.Generator().manual_seed(0)
    raw = torch.randn(64, 11, generator=g) * 0.3
    raw[:, 0] += 1.0  # heights around the 0.7 threshold
    raw[:, 1] *= 0.5
    mean, std = raw.mean(0), raw.std(0)
    z = (raw - mean) / (std + 1e-3)
    fn = normalized(get_termination("hopper"), mean, std)
    expected = get_termination("hopper")(raw, raw, raw)
    assert 0 < expected.sum() < 64
    torch.testing.assert_close(fn(z, z, z), expected)
