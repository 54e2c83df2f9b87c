"""Local behaviour-data collection into Minari datasets (DESIGN.md, "Data and tasks": ``zoo data collect``).

A behaviour policy acts on batches of observations; :func:`collect_dataset` plays ``episodes`` episodes with
fixed seeds (episode k is reset with seed + k, and the policy's RNG is seeded with ``seed``), builds the
episode buffers itself (no jax) and writes them with ``minari.create_dataset_from_buffers``. The same command
with the same package versions writes the same data; the content fingerprint
(``Transitions.fingerprint()`` of the data as ``load_minari`` reads it back) goes into the metadata.

Datasets live under ``data_dir()/"minari"`` with ids like ``zoo/pendulum/random-v2``. A dataset is built in a
temporary directory beside its final place and renamed into it: nothing half-written is ever left behind.

Collection protocol (:data:`COLLECTION_PROTOCOL`, see :mod:`zoo.data.behaviour`): version 1 and later sample the actions
of ``medium`` and ``expert`` from the behaviour policy's stochastic distribution and stores their
log-probabilities (``infos["action_log_probs"]``, one entry per action, as D4RL's ``infos/action_log_probs``);
version 0 (before 2026-11) acted deterministically. The version is the dataset id's ``-vN`` suffix (so the
cache path), is written into the metadata (``zoo_protocol``), and enters the data's fingerprint, so data of an
older protocol are never reused in its place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from zoo.data.transitions import Transitions
from zoo.paths import data_dir

METADATA_KEY = "zoo_fingerprint"
PROTOCOL_KEY = "zoo_protocol"
COLLECTION_PROTOCOL = 2  # 0: deterministic medium/expert actions; 1: sampled, with log-probabilities;
# 2: as 1, with the behaviour policy trained by the population-capable SAC (issue 15: stacked layers and per-run
# generators draw other numbers than protocol 1's learner, so its data and expert differ)


@runtime_checkable
class BehaviourPolicy(Protocol):
    """What collects data: ``act(obs [B, d_s]) -> actions [B, d_a]`` (numpy), and a ``name``.

    A policy may also have ``seed(seed: int)``; :func:`collect_dataset` calls it before the first episode. A
    stochastic policy may have ``act_with_log_prob(obs) -> (actions [B, d_a], log π(a|s) [B])``: the collector
    then stores the log-probabilities as ``infos["action_log_probs"]``.
    """

    name: str

    def act(self, obs: np.ndarray) -> np.ndarray: ...


class RandomPolicy:
    """Uniform random actions in the action space's bounds, from its own seeded numpy generator."""

    name = "random"

    def __init__(self, action_space: gym.spaces.Box, seed: int = 0) -> None:
        if not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"RandomPolicy needs a Box action space, got {action_space}")
        self.low = np.asarray(action_space.low, dtype=np.float64)
        self.high = np.asarray(action_space.high, dtype=np.float64)
        self.dtype = action_space.dtype
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray) -> np.ndarray:
        batch = np.asarray(obs).shape[0]
        return self.rng.uniform(self.low, self.high, size=(batch, *self.low.shape)).astype(self.dtype)


def _behaviour_policy(quality: str) -> Callable[[gym.Env, int], BehaviourPolicy]:
    def factory(env: gym.Env, seed: int) -> BehaviourPolicy:
        from zoo.data.behaviour import quality_policy

        return quality_policy(env.spec.id, quality, seed)  # type: ignore[union-attr]

    return factory


def _medium_replay(env_id: str, seed: int) -> list[dict[str, Any]]:
    from zoo.data.behaviour import medium_replay_episodes

    return medium_replay_episodes(env_id, seed)


# quality name -> factory(env, seed) -> BehaviourPolicy. medium and expert come from one online SAC run
# (zoo.data.behaviour); medium-replay is that run's replay buffer, so it is a list of episodes, not a policy.
QUALITIES: dict[str, Callable[[gym.Env, int], BehaviourPolicy]] = {
    "random": lambda env, seed: RandomPolicy(env.action_space, seed),
    "medium": _behaviour_policy("medium"),
    "expert": _behaviour_policy("expert"),
}
REPLAY_QUALITIES: dict[str, Callable[[str, int], list[dict[str, Any]]]] = {"medium-replay": _medium_replay}


def get_quality(quality: str) -> Callable[..., Any]:
    """The policy factory (or, for replay qualities, the episode source) of a data quality."""
    if quality in QUALITIES:
        return QUALITIES[quality]
    if quality in REPLAY_QUALITIES:
        return REPLAY_QUALITIES[quality]
    available = ", ".join(sorted([*QUALITIES, *REPLAY_QUALITIES]))
    raise ValueError(f"unknown quality {quality!r}; available: {available}")


# -- where local datasets live -----------------------------------------------------------------------
def local_root() -> Path:
    """The Minari datasets root of the zoo's local datasets: ``data_dir()/"minari"``."""
    return data_dir() / "minari"


def local_dataset_path(dataset_id: str, root: Path | None = None) -> Path | None:
    """The directory of a complete local dataset (with ``data/metadata.json``), or None."""
    path = (root or local_root()) / dataset_id
    return path if (path / "data" / "metadata.json").is_file() else None


@contextlib.contextmanager
def minari_datasets_path(root: Path) -> Iterator[Path]:
    """Point Minari at ``root`` (``MINARI_DATASETS_PATH``) for the duration of the block, then restore it."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield root
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def load_local_dataset(dataset_id: str, root: Path | None = None) -> Transitions:
    """A local dataset as flat transitions (through the Minari loader, with Minari pointed at ``root``)."""
    from zoo.data.minari_io import load_minari

    with minari_datasets_path(root or local_root()):
        return load_minari(dataset_id, download=False)


def read_local_metadata(dataset_id: str, root: Path | None = None) -> dict[str, Any] | None:
    """The raw ``metadata.json`` of a local dataset, or None when it is not there."""
    path = local_dataset_path(dataset_id, root)
    if path is None:
        return None
    with (path / "data" / "metadata.json").open() as fh:
        return json.load(fh)


# -- collection --------------------------------------------------------------------------------------
def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("gymnasium", "mujoco", "numpy", "minari", "mbrl-zoo"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _play(env: gym.Env, policy: BehaviourPolicy, episodes: int, seed: int) -> list[dict[str, Any]]:
    """Play ``episodes`` episodes; episode k is reset with seed + k. Returns per-episode arrays (with
    ``infos["action_log_probs"]`` when the policy reports them)."""
    out = []
    with_log_probs = callable(getattr(policy, "act_with_log_prob", None))
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        observations = [np.asarray(obs)]
        actions, rewards, terms, truncs, log_probs = [], [], [], [], []
        done = False
        while not done:
            if with_log_probs:
                batch_actions, batch_log_probs = policy.act_with_log_prob(np.asarray(obs)[None])  # type: ignore[attr-defined]
                action = np.asarray(batch_actions)[0]
                log_probs.append(float(np.asarray(batch_log_probs)[0]))
            else:
                action = np.asarray(policy.act(np.asarray(obs)[None]))[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(np.asarray(obs))
            actions.append(action)
            rewards.append(float(reward))
            terms.append(bool(terminated))
            truncs.append(bool(truncated))
            done = terminated or truncated
        out.append(
            {
                "seed": seed + k,
                "observations": np.stack(observations),
                "actions": np.stack(actions),
                "rewards": np.asarray(rewards, dtype=np.float64),
                "terminations": np.asarray(terms, dtype=bool),
                "truncations": np.asarray(truncs, dtype=bool),
                "infos": {"action_log_probs": np.asarray(log_probs, dtype=np.float64)} if with_log_probs else {},
            }
        )
    return out


def _copy_namespace_metadata(tmp_root: Path, root: Path, dataset_id: str) -> None:
    """Minari keeps a ``namespace_metadata.json`` in every namespace directory; give the final root one."""
    parts = dataset_id.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        rel = Path(*parts[:i]) / "namespace_metadata.json"
        if not (root / rel).exists() and (tmp_root / rel).exists():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tmp_root / rel, root / rel)


def _env_spec(env_id: str, env_kwargs: dict[str, Any] | None) -> gym.envs.registration.EnvSpec:
    spec = gym.spec(env_id)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, **(env_kwargs or {})}) if env_kwargs else spec


def collect_dataset(
    env_id: str,
    policy: BehaviourPolicy,
    episodes: int,
    dataset_id: str,
    seed: int = 0,
    quality: str = "random",
    *,
    env_kwargs: dict[str, Any] | None = None,
    root: Path | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    overwrite: bool = False,
    description: str | None = None,
    played: list[dict[str, Any]] | None = None,
) -> Path:
    """Collect ``episodes`` episodes of ``policy`` on ``env_id`` into the Minari dataset ``dataset_id``.

    ``played`` writes given episodes instead (a replay buffer; ``policy`` is then unused).

    Episode k is reset with seed + k and the policy (when it has ``seed``) is seeded with ``seed``. The
    fingerprint of the flattened data goes into the metadata as ``zoo_fingerprint``; reference scores too
    (the pendulum tasks' by default). Built in a temporary directory, then renamed into
    ``root/dataset_id`` (``root`` = ``data_dir()/"minari"``); a failure leaves nothing behind.
    """
    import minari
    from minari.data_collector.episode_buffer import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id

    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    parse_dataset_id(dataset_id)  # a malformed id fails here, before any work
    root = Path(root) if root is not None else local_root()
    final = root / dataset_id
    if final.exists():
        if not overwrite:
            raise FileExistsError(
                f"dataset {dataset_id} already exists at {final}; pass overwrite=True (--overwrite)"
            )
    if ref_min_score is None and ref_max_score is None and env_id == "Pendulum-v1":
        from zoo.data.local_references import PENDULUM_EXPERT_RETURN, PENDULUM_RANDOM_RETURN

        ref_min_score, ref_max_score = PENDULUM_RANDOM_RETURN, PENDULUM_EXPERT_RETURN

    root.mkdir(parents=True, exist_ok=True)
    remove_stale_collections(root)
    tmp_root = root / f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        if played is None:
            env = gym.make(env_id, **(env_kwargs or {}))
            try:
                if hasattr(policy, "seed"):
                    policy.seed(seed)  # type: ignore[attr-defined]
                env.action_space.seed(seed)
                played = _play(env, policy, episodes, seed)
            finally:
                env.close()
        buffers = [
            EpisodeBuffer(
                id=k,
                seed=ep["seed"],
                observations=ep["observations"],
                actions=ep["actions"],
                rewards=list(ep["rewards"]),
                terminations=list(ep["terminations"]),
                truncations=list(ep["truncations"]),
                infos=ep.get("infos") or {},
            )
            for k, ep in enumerate(played)
        ]
        with minari_datasets_path(tmp_root), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            dataset = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=buffers,
                env=_env_spec(env_id, env_kwargs),
                algorithm_name=f"zoo-{quality}",
                author="mbrl-zoo",
                code_permalink="https://pypi.org/project/mbrl-zoo/",
                description=description
                or (
                    f"{quality} behaviour data on {env_id}: {episodes} episodes, reset seeds {seed}+k"
                    if policy is not None
                    else f"{quality} data on {env_id}: {episodes} replay-buffer episodes of online SAC seed {seed}"
                ),
                ref_min_score=ref_min_score,
                ref_max_score=ref_max_score,
                eval_env=_env_spec(env_id, env_kwargs) if ref_max_score is not None else None,
            )
            # The protocol first: it enters the fingerprint of exactly what the loader will read back.
            dataset.storage.update_metadata({PROTOCOL_KEY: COLLECTION_PROTOCOL})
            fingerprint = load_local_dataset(dataset_id, root=tmp_root).fingerprint()
            extra: dict[str, Any] = {
                METADATA_KEY: fingerprint,
                "zoo_quality": quality,
                "zoo_policy": "replay buffer" if policy is None else getattr(policy, "name", type(policy).__name__),
                "zoo_seed": seed,
                "zoo_episodes": episodes,
                "zoo_env_kwargs": dict(env_kwargs or {}),
                "zoo_versions": _versions(),
            }
            if ref_min_score is not None and ref_max_score is None:
                extra["ref_min_score"] = ref_min_score
            dataset.storage.update_metadata(extra)
        _copy_namespace_metadata(tmp_root, root, dataset_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # overwrite: move the old one aside, then drop it once the new one is in place
            old = tmp_root / ".old"
            os.replace(final, old)
        os.replace(tmp_root / dataset_id, final)
    finally:
        if (tmp_root / ".old").exists() and not final.exists():  # stopped between the two renames: keep the old one
            os.replace(tmp_root / ".old", final)
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


TMP_PREFIX = ".tmp-collect-"  # + pid of the collecting process + random suffix


def remove_stale_collections(root: Path) -> None:
    """Delete the temporary directories of collections whose process is gone (killed before its cleanup ran).
    One that holds ``.old`` (a dataset being replaced by --overwrite at the moment of the kill) is kept, with a
    warning naming it: it is the only copy of that dataset."""
    for tmp in root.glob(f"{TMP_PREFIX}*"):
        pid_text = tmp.name.removeprefix(TMP_PREFIX).split("-")[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        if (tmp / ".old").exists():
            warnings.warn(f"{tmp / '.old'} holds a dataset an interrupted --overwrite was replacing", stacklevel=2)
            continue
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def collect_quality(
    env_id: str,
    quality: str = "random",
    episodes: int = 100,
    dataset_id: str | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> Path:
    """Build the ``quality`` behaviour policy for ``env_id`` (seeded with ``seed``) and collect with it."""
    factory = get_quality(quality)
    dataset_id = dataset_id or default_dataset_id(env_id, quality)
    if quality in REPLAY_QUALITIES:
        played = factory(env_id, seed)
        return collect_dataset(
            env_id, None, len(played), dataset_id, seed=seed, quality=quality, played=played, **kwargs  # type: ignore[arg-type]
        )
    env = gym.make(env_id, **kwargs.get("env_kwargs", None) or {})
    try:
        policy = factory(env, seed)
    finally:
        env.close()
    return collect_dataset(env_id, policy, episodes, dataset_id, seed=seed, quality=quality, **kwargs)


def default_dataset_id(env_id: str, quality: str) -> str:
    """``zoo/<env name, lower case>/<quality>-v<protocol>``, e.g. ``zoo/pendulum/random-v2`` for Pendulum-v1:
    the version is the collection protocol, so data of an older protocol live under another id."""
    name = env_id.split("/")[-1].split("-v")[0].lower()
    return f"zoo/{name}/{quality}-v{COLLECTION_PROTOCOL}"
