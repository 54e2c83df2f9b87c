"""Fixture files in the real dataset formats (DESIGN.md, Tests; evaluation.md §2 and §7), for any test.

Every writer returns the ground truth it wrote (the arrays, and the true next state of every row even
when the file does not store it), so tests can check loaders exactly.

- :func:`write_d4rl_hdf5`: a D4RL HDF5 file (observations, actions, rewards, terminals, timeouts,
  next_observations, plus ``metadata/*`` scalars and ``infos/*`` arrays like the real files).
- :func:`write_neorl_npz`: a NeoRL npz (obs, next_obs, action, reward, done, index).
- :func:`write_minari_dataset`: a Minari dataset written by Minari itself into ``$MINARI_DATASETS_PATH``
  (set it with ``monkeypatch.setenv`` first).
- :func:`serve_files`: a loopback-only HTTP server (127.0.0.1, a daemon thread) for download tests.
- :class:`HopperShapedTask` and :func:`hopper_shaped_rows`: synthetic transitions in Hopper's shapes for engine
  tests and benchmarks that need no env (evaluation off).
"""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.transitions import Transitions
from zoo.protocols import EnvSpec

HOPPER_OBS, HOPPER_ACT = 11, 3


@dataclass
class HopperShapedTask:
    """A task in Hopper's shapes and with its termination function, over synthetic rows: no env is ever made,
    so runs on it need ``eval.episodes=0``."""

    name: str = "hopper-shaped"
    env_id: str = "Hopper-v4"
    termination: str = "hopper"

    def spec(self) -> EnvSpec:
        return EnvSpec(HOPPER_OBS, HOPPER_ACT)


def hopper_shaped_rows(n: int, seed: int = 0) -> Transitions:
    """n transitions near a healthy Hopper state (torso height 1.25), so model rollouts rarely terminate."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(0, 0.1, size=(n, HOPPER_OBS))
    obs[:, 0] += 1.25
    act = rng.uniform(-1, 1, size=(n, HOPPER_ACT))
    return Transitions.from_numpy(
        obs=obs,
        act=act,
        reward=rng.normal(1, 0.1, n),
        next_obs=obs + 0.01 * rng.normal(size=obs.shape),
        terminal=np.zeros(n),
        timeout=np.zeros(n),
    )


# (end, length): "terminal" ends with terminals=1, "timeout" with timeouts=1, "partial" with neither
# (only sensible last: the trailing partial episode of a file).
D4RL_EPISODES: tuple[tuple[str, int], ...] = (
    ("terminal", 5),
    ("timeout", 7),
    ("terminal", 4),
    ("timeout", 6),
    ("terminal", 1),
    ("partial", 3),
)


def _episode_arrays(
    rng: np.random.Generator, ends_lengths: Sequence[tuple[str, int]], obs_dim: int, act_dim: int
) -> dict[str, np.ndarray]:
    """Rows of consecutive episodes: each episode draws its own states s_0..s_T (T = length)."""
    obs, nxt, act, rew, term, tout, episode = [], [], [], [], [], [], []
    for k, (end, length) in enumerate(ends_lengths):
        if length < 1:
            raise ValueError("episode lengths must be >= 1")
        states = rng.normal(size=(length + 1, obs_dim))
        obs.append(states[:-1])
        nxt.append(states[1:])
        act.append(rng.uniform(-1, 1, size=(length, act_dim)))
        rew.append(rng.normal(size=length))
        t = np.zeros(length, dtype=bool)
        o = np.zeros(length, dtype=bool)
        if end == "terminal":
            t[-1] = True
        elif end == "timeout":
            o[-1] = True
        elif end not in ("partial", "none", "truncated"):
            raise ValueError(f"unknown episode end {end!r}")
        term.append(t)
        tout.append(o)
        episode.append(np.full(length, k))
    return {
        "observations": np.concatenate(obs),
        "next_observations": np.concatenate(nxt),
        "actions": np.concatenate(act),
        "rewards": np.concatenate(rew),
        "terminals": np.concatenate(term),
        "timeouts": np.concatenate(tout),
        "episode": np.concatenate(episode),
    }


def write_d4rl_hdf5(
    path: str | Path,
    episodes: Sequence[tuple[str, int]] = D4RL_EPISODES,
    with_next_obs: bool = True,
    dtype: Any = np.float32,
    obs_dim: int = 11,
    act_dim: int = 3,
    seed: int = 0,
    metadata: bool = True,
    drop_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Write a D4RL-format HDF5 file; return the ground truth.

    ``episodes`` lists (end, length) pairs, end in {"terminal", "timeout", "partial"}. The file stores
    float arrays in ``dtype`` (D4RL's medium-replay files are float64), terminals/timeouts as bool and
    rewards as (N,), like D4RL. The returned dict holds the written arrays (float64 originals), the true
    next state of every row (``next_observations``, also when the file does not store it), ``episode``
    (episode id per row), ``lengths``, ``ends`` and ``returns`` (per-episode reward sums).
    """
    import h5py

    rng = np.random.default_rng(seed)
    truth = _episode_arrays(rng, episodes, obs_dim, act_dim)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key in ("observations", "actions", "rewards", "next_observations"):
            if key == "next_observations" and not with_next_obs:
                continue
            if key not in drop_keys:
                f.create_dataset(key, data=truth[key].astype(dtype))
        for key in ("terminals", "timeouts"):
            if key not in drop_keys:
                f.create_dataset(key, data=truth[key])
        n = truth["rewards"].shape[0]
        f.create_dataset("infos/qpos", data=rng.normal(size=(n, 6)).astype(dtype))
        f.create_dataset("infos/action_log_probs", data=rng.normal(size=n).astype(dtype))
        if metadata:
            f.create_dataset("metadata/algorithm", data=np.bytes_("SAC"))
            f.create_dataset("metadata/iteration", data=np.int64(42))
            f.create_dataset("metadata/policy/fc0/weight", data=rng.normal(size=(4, obs_dim)))
    truth["lengths"] = np.array([length for _, length in episodes])
    truth["ends"] = [end for end, _ in episodes]
    truth["returns"] = np.array([truth["rewards"][truth["episode"] == k].sum() for k in range(len(episodes))])
    return truth


def write_neorl_npz(
    path: str | Path,
    lengths: Sequence[int] = (1000, 37, 1000, 12, 5),
    obs_dim: int = 11,
    act_dim: int = 3,
    seed: int = 0,
    index_dtype: Any = np.float32,
) -> dict[str, Any]:
    """Write a NeoRL-format npz (``index`` = exclusive end offsets, float32); return the ground truth.

    Episodes shorter than 1000 steps end with ``done = 1`` (they terminated). The returned dict holds the
    written arrays plus ``lengths``, ``starts``, ``ends`` (int) and ``episode`` (episode id per row).
    """
    rng = np.random.default_rng(seed)
    spec = [("terminal" if n < 1000 else "timeout", n) for n in lengths]
    t = _episode_arrays(rng, spec, obs_dim, act_dim)
    ends = np.cumsum(lengths)
    data = {
        "obs": t["observations"].astype(np.float32),
        "next_obs": t["next_observations"].astype(np.float32),
        "action": t["actions"].astype(np.float32),
        "reward": t["rewards"].astype(np.float32)[:, None],
        "done": t["terminals"].astype(np.float32)[:, None],
        "index": ends.astype(index_dtype),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return {
        **data,
        "lengths": np.asarray(lengths),
        "starts": np.concatenate([[0], ends[:-1]]),
        "ends": ends,
        "episode": t["episode"],
    }


MINARI_EPISODES: tuple[tuple[str, int], ...] = (("terminal", 5), ("truncated", 7), ("none", 4), ("terminal", 3))


def write_minari_dataset(
    dataset_id: str,
    env_id: str | None = "Pendulum-v1",
    episodes: Sequence[tuple[str, int]] = MINARI_EPISODES,
    seed: int = 0,
    ref_scores: tuple[float, float] | None = (-1500.0, -150.0),
    dict_obs: bool = False,
) -> dict[str, Any]:
    """Write a Minari dataset with ``minari.create_dataset_from_buffers``; return the ground truth.

    ``episodes`` lists (end, length) pairs, end in {"terminal", "truncated", "none"} (a last step with
    neither flag). Observations lie inside Pendulum-v1's box (3 dims), actions inside its action box.
    ``dict_obs`` writes a Dict observation space (no env) for error tests. The ground truth holds the flat
    expected arrays (``obs``, ``next_obs``, ``act``, ``reward``, ``terminations``, ``truncations``) and the
    per-episode ``observations`` lists.
    """
    import gymnasium as gym
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer

    rng = np.random.default_rng(seed)
    obs_dim, act_dim = 3, 1
    buffers, per_episode = [], []
    flat: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "next_obs", "act", "reward", "terminations", "truncations", "episode")
    }
    for k, (end, length) in enumerate(episodes):
        states = rng.uniform(-1, 1, size=(length + 1, obs_dim)).astype(np.float32)
        actions = rng.uniform(-2, 2, size=(length, act_dim)).astype(np.float32)
        rewards = rng.normal(size=length)
        term = np.zeros(length, dtype=bool)
        trunc = np.zeros(length, dtype=bool)
        if end == "terminal":
            term[-1] = True
        elif end == "truncated":
            trunc[-1] = True
        elif end != "none":
            raise ValueError(f"unknown episode end {end!r}")
        observations: Any = states
        if dict_obs:
            observations = {"a": states, "b": states[:, :2].copy()}
        buffers.append(
            EpisodeBuffer(
                id=k,
                observations=observations,
                actions=actions,
                rewards=list(rewards),
                terminations=list(term),
                truncations=list(trunc),
                infos={},
            )
        )
        per_episode.append(states)
        flat["obs"].append(states[:-1])
        flat["next_obs"].append(states[1:])
        flat["act"].append(actions)
        flat["reward"].append(rewards)
        flat["terminations"].append(term)
        flat["truncations"].append(trunc)
        flat["episode"].append(np.full(length, k))

    kwargs: dict[str, Any] = {}
    if dict_obs:
        kwargs["observation_space"] = gym.spaces.Dict(
            {
                "a": gym.spaces.Box(-1, 1, (obs_dim,), np.float32),
                "b": gym.spaces.Box(-1, 1, (2,), np.float32),
            }
        )
        kwargs["action_space"] = gym.spaces.Box(-2, 2, (act_dim,), np.float32)
        env = None
    else:
        env = env_id
        if ref_scores is not None:
            kwargs["ref_min_score"], kwargs["ref_max_score"] = ref_scores
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about missing author, eval_env, ...
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id, buffer=buffers, env=env, eval_env=env, algorithm_name="fixture", **kwargs
        )
    truth: dict[str, Any] = {k: np.concatenate(v) for k, v in flat.items()}
    truth["observations"] = per_episode
    truth["lengths"] = np.array([length for _, length in episodes])
    truth["ends"] = [end for end, _ in episodes]
    return truth


@contextlib.contextmanager
def serve_files(files: dict[str, bytes], truncate: Sequence[str] = ()) -> Iterator[str]:
    """Serve ``files`` (URL path -> bytes, e.g. ``"/a.hdf5"``) on 127.0.0.1; yield the base URL.

    Paths in ``truncate`` announce their full Content-Length but send only half and close the connection
    (an interrupted download). Unknown paths get 404. The server thread is stopped on exit.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 5

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = files.get(self.path)
            if body is None:
                self.send_error(404, "not found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if self.path in truncate else body)
            self.close_connection = True

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
