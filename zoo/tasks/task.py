"""Tasks: a dataset, its evaluation env, its reference scores and its termination function (DESIGN.md,
"Data and tasks"; evaluation.md §1-3).

A task name is suite-independent: ``hopper-medium-v2`` (D4RL), ``neorl-hopper-low`` (NeoRL, 1000 training
trajectories), ``mujoco/hopper/medium-v0`` (Minari, as Minari names it) and ``pendulum-random`` (local,
collected on first use). :func:`get_task` resolves a name; :func:`task_names` lists them.

Evaluation envs (evaluation.md §3): D4RL on Gymnasium ``<Env>-v4``; NeoRL on ``<Env>-v4`` with
``exclude_current_positions_from_observation=False``; Minari on the env recorded in the dataset; the local
pendulum tasks on ``Pendulum-v1``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from zoo.data.collect import default_dataset_id
from zoo.data.transitions import Transitions
from zoo.protocols import EnvSpec
from zoo.tasks.references import D4RL_REFERENCES, NEORL_REFERENCES, PENDULUM_REFERENCE, Reference

FAMILIES: tuple[str, ...] = ("hopper", "halfcheetah", "walker2d", "ant", "pendulum")
SOURCES: tuple[str, ...] = ("d4rl", "neorl", "minari", "local")
TERMINATIONS: tuple[str, ...] = (
    "hopper",
    "walker2d",
    "halfcheetah",
    "ant",
    "hopper_neorl",
    "walker2d_neorl",
    "halfcheetah_neorl",
    "never",
)
LOADER_MODES: tuple[str, ...] = ("keep_timeouts", "olk", "d4rl_qlearning")

_GYM_NAMES = {"hopper": "Hopper", "halfcheetah": "HalfCheetah", "walker2d": "Walker2d", "ant": "Ant"}


class UnknownTaskError(KeyError):
    """A task name that is not known; the message lists close matches and the suites."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Task:
    """One offline RL task (suite-independent)."""

    name: str
    family: str  # hopper | halfcheetah | walker2d | ant | pendulum
    source: str  # d4rl | neorl | minari | local
    dataset_id: str
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    ref_min: float | None = None  # None for Minari: read from the dataset's metadata
    ref_max: float | None = None
    ref_source: str = ""
    termination: str = "never"
    loader: dict[str, Any] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(self.name)

    # -- references -------------------------------------------------------------------------
    @property
    def reference(self) -> Reference:
        """R_min / R_max with their source (evaluation.md §1). Minari: from the cached dataset's metadata."""
        if self.ref_min is not None and self.ref_max is not None:
            return Reference(self.ref_min, self.ref_max, self.ref_source)
        meta = self._minari_metadata()
        if meta is None:
            raise self._unavailable("its reference scores are in the dataset's metadata")
        if meta.get("ref_min_score") is None or meta.get("ref_max_score") is None:
            from zoo.data.errors import DatasetError

            raise DatasetError(f"Minari dataset {self.dataset_id} has no ref_min_score / ref_max_score")
        return Reference(
            float(meta["ref_min_score"]),
            float(meta["ref_max_score"]),
            f"Minari metadata of {self.dataset_id} (ref_min_score / ref_max_score)",
        )

    # -- environments -----------------------------------------------------------------------
    def _eval_env(self) -> tuple[str | gym.envs.registration.EnvSpec, dict[str, Any]]:
        if self.source == "minari":
            meta = self._minari_metadata()
            recorded = (meta or {}).get("eval_env_spec") or (meta or {}).get("env_spec")
            if recorded:
                spec = gym.envs.registration.EnvSpec.from_json(recorded)
                return spec, {}
        return self.env_id, dict(self.env_kwargs)

    def make_env(self, **kw: Any) -> gym.Env:
        """The evaluation env (evaluation.md §3); ``kw`` overrides the task's env kwargs."""
        env_id, kwargs = self._eval_env()
        return gym.make(env_id, **{**kwargs, **kw})

    def make_vector_env(
        self, num_envs: int, seed: int | None = None, autoreset_mode: str = "disabled", **kw: Any
    ) -> gym.vector.SyncVectorEnv:
        """``num_envs`` evaluation envs in a Gymnasium SyncVectorEnv (evaluation.md §3, vectorised eval).

        ``autoreset_mode`` is Gymnasium's (``"disabled"`` by default: each sub-env plays one episode and the
        caller resets them all with ``reset(seed=[...])``; ``"next_step"``, ``"same_step"`` also work).
        With ``seed``, the action spaces are seeded (sub-env i with seed + i); reset seeds are the caller's.
        """
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        mode = {m.name.lower(): m for m in gym.vector.AutoresetMode}.get(autoreset_mode.lower())
        if mode is None:
            valid = ", ".join(m.name.lower() for m in gym.vector.AutoresetMode)
            raise ValueError(f"unknown autoreset_mode {autoreset_mode!r}; valid: {valid}")
        fns: list[Callable[[], gym.Env]] = [functools.partial(self.make_env, **kw) for _ in range(num_envs)]
        venv = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
        if seed is not None:
            venv.action_space.seed(seed)
            for i, env in enumerate(venv.envs):
                env.action_space.seed(seed + i)
        return venv

    def spec(self) -> EnvSpec:
        """Observation/action dims and action bounds from the evaluation env's spaces (no dataset needed)."""
        env_id, kwargs = self._eval_env()
        key = env_id if isinstance(env_id, str) else env_id.to_json()
        return _spec_of(key, json.dumps(kwargs, sort_keys=True, default=str))

    @property
    def max_episode_steps(self) -> int | None:
        env_id, _ = self._eval_env()
        spec = gym.spec(env_id) if isinstance(env_id, str) else env_id
        return spec.max_episode_steps

    # -- data -------------------------------------------------------------------------------
    def dataset_path(self) -> Path | None:
        """The cached dataset file (or Minari dataset directory), or None; never touches the network."""
        if self.source == "d4rl":
            from zoo.data.d4rl import find_d4rl_file

            return find_d4rl_file(self.dataset_id)
        if self.source == "neorl":
            from zoo.data.neorl import neorl_file

            try:
                return neorl_file(
                    self.loader["neorl_env"],
                    self.loader["level"],
                    self.loader["num_trajectories"],
                    split="train",
                    download=False,
                )
            except FileNotFoundError:
                return None
        if self.source == "minari":
            from zoo.data.minari_io import minari_local_path

            return minari_local_path(self.dataset_id)
        from zoo.data.collect import local_dataset_path

        return local_dataset_path(self.dataset_id)

    def download(self) -> Path:
        """Fetch (or, for local tasks, collect) the dataset into the cache and return its path."""
        if self.source == "d4rl":
            from zoo.data.d4rl import d4rl_file

            return d4rl_file(self.dataset_id, download=True)
        if self.source == "neorl":
            from zoo.data.neorl import neorl_file

            return neorl_file(
                self.loader["neorl_env"], self.loader["level"], self.loader["num_trajectories"], "train", True
            )
        if self.source == "minari":
            from zoo.data.minari_io import load_minari, minari_local_path

            load_minari(self.dataset_id, download=True)
            path = minari_local_path(self.dataset_id)
            if path is None:
                raise self._unavailable("the download did not leave it in the cache")
            return path
        return self._collect()

    def load(self, loader: str = "keep_timeouts", download: bool = False) -> Transitions:
        """The dataset as flat transitions (evaluation.md §2), checked against the evaluation env's spaces.

        ``loader`` is the D4RL loading mode (``keep_timeouts``, ``olk``, ``d4rl_qlearning``). A missing
        dataset raises :class:`~zoo.data.errors.DatasetUnavailableError` saying how to get it, unless
        ``download`` (local tasks are collected on first use); a dataset whose obs/action dims differ from the
        env's raises :class:`~zoo.data.errors.DatasetError` naming both shapes.
        """
        from zoo.data.errors import DatasetUnavailableError

        if loader not in LOADER_MODES:
            raise ValueError(f"unknown loader mode {loader!r}; valid: {', '.join(LOADER_MODES)}")
        path = self.dataset_path()
        if path is None:
            if self.source == "local":
                path = self._collect()
            elif download:
                try:
                    path = self.download()
                except DatasetUnavailableError:
                    raise
                except FileNotFoundError as err:
                    raise self._unavailable(str(err)) from err
            else:
                raise self._unavailable()
        data = self._read(path, loader)
        data = self._fit_obs(data)
        self._check_shapes(data, path)
        data.meta.update({"task": self.name, "source": self.source, "dataset_id": self.dataset_id})
        data.meta.setdefault("path", str(path))
        data.meta.setdefault("loader", loader if self.source == "d4rl" else self.source)
        return data

    def fingerprint_source(self) -> str:
        """A cheap identity of the cached raw data: ``<source>:<dataset id>:<sha256 of its files' names, sizes
        and first/last MiB>`` (16 hex digits). For cache keys that must change when the file does; the content
        hash of the loaded data is ``Transitions.fingerprint()``."""
        path = self.dataset_path()
        if path is None:
            raise self._unavailable()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        h = hashlib.sha256()
        for f in files:
            size = f.stat().st_size
            h.update(f"{f.relative_to(path) if path.is_dir() else f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(size - (1 << 20))
                    h.update(fh.read())
        return f"{self.source}:{self.dataset_id}:{h.hexdigest()[:16]}"

    # -- helpers ----------------------------------------------------------------------------
    def how_to_get(self) -> str:
        """One sentence saying how to obtain the dataset."""
        if self.source == "local":
            quality = self.loader.get("quality", "random")
            return (
                f"it is collected on first use (Task.load), or run `zoo data collect --env {self.env_id} "
                f"--quality {quality} --dataset-id {self.dataset_id}`"
            )
        return f"download it with `zoo data download {self.name}` or pass --download"

    def _unavailable(self, why: str = "") -> Exception:
        from zoo.data.errors import DatasetUnavailableError

        reason = f" ({why})" if why else ""
        return DatasetUnavailableError(
            f"dataset {self.dataset_id} of task {self.name} is not in the cache{reason}; {self.how_to_get()}"
        )

    def _minari_metadata(self) -> dict[str, Any] | None:
        if self.source not in ("minari", "local"):
            return None
        path = self.dataset_path()
        if path is None:
            return None
        meta_file = path / "data" / "metadata.json"
        if not meta_file.is_file():
            return None
        with meta_file.open() as fh:
            return json.load(fh)

    def _collect(self) -> Path:
        from zoo.data.collect import collect_quality, get_quality, local_dataset_path

        existing = local_dataset_path(self.dataset_id)
        if existing is not None:
            return existing
        try:
            get_quality(self.loader.get("quality", "random"))
        except ValueError as err:
            raise self._unavailable(f"it is collected on first use, but {err}") from err
        return collect_quality(
            self.env_id,
            quality=self.loader.get("quality", "random"),
            episodes=int(self.loader.get("episodes", 100)),
            dataset_id=self.dataset_id,
            seed=int(self.loader.get("seed", 0)),
        )

    def _read(self, path: Path, loader: str) -> Transitions:
        if self.source == "d4rl":
            from zoo.data.d4rl import load_d4rl_hdf5

            return load_d4rl_hdf5(path, mode=loader)
        if self.source == "neorl":
            from zoo.data.neorl import load_neorl_npz

            return load_neorl_npz(
                path,
                num_trajectories=self.loader["num_trajectories"],
                can_terminate=self.family != "halfcheetah",
            )
        if self.source == "minari":
            from zoo.data.minari_io import load_minari

            return load_minari(self.dataset_id, download=False)
        from zoo.data.collect import load_local_dataset

        return load_local_dataset(self.dataset_id)

    def _fit_obs(self, data: Transitions) -> Transitions:
        """D4RL Ant: keep the first ``obs_dims`` (27) dims of its 111 (evaluation.md §2.8)."""
        keep = self.loader.get("obs_dims")
        if keep is None or data.obs_dim == keep:
            return data
        if data.obs_dim < keep:
            return data  # the shape check below names the mismatch
        return Transitions(
            obs=data.obs[:, :keep],
            act=data.act,
            reward=data.reward,
            next_obs=data.next_obs[:, :keep],
            terminal=data.terminal,
            timeout=data.timeout,
            meta={**data.meta, "obs_dims_kept": keep, "obs_dims_file": data.obs_dim},
        )

    def _check_shapes(self, data: Transitions, path: Path) -> None:
        from zoo.data.errors import DatasetError

        spec = self.spec()
        if data.obs_dim != spec.obs_dim or data.act_dim != spec.act_dim:
            env_id, kwargs = self._eval_env()
            env_name = env_id if isinstance(env_id, str) else env_id.id
            raise DatasetError(
                f"dataset {self.dataset_id} ({path}) has observations of shape ({data.obs_dim},) and "
                f"actions of shape ({data.act_dim},), but the task's evaluation env {env_name}{_kw(kwargs)} "
                f"has observations of shape ({spec.obs_dim},) and actions of shape ({spec.act_dim},); the "
                f"file is for a different env (or is corrupt): delete it and download it again"
            )


def _kw(kwargs: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")" if kwargs else ""


@functools.lru_cache(maxsize=64)
def _spec_of(env_key: str, kwargs_json: str) -> EnvSpec:
    kwargs = json.loads(kwargs_json)
    env_id: Any = env_key
    if env_key.lstrip().startswith("{"):
        env_id = gym.envs.registration.EnvSpec.from_json(env_key)
    env = gym.make(env_id, **kwargs)
    try:
        obs_space, act_space = env.observation_space, env.action_space
        if not isinstance(act_space, gym.spaces.Box) or obs_space.shape is None or len(obs_space.shape) != 1:
            raise ValueError(f"{env_key}: the zoo needs a flat Box observation and a Box action space")
        return EnvSpec(
            obs_dim=int(obs_space.shape[0]),
            act_dim=int(act_space.shape[0]),
            act_low=float(np.min(act_space.low)),
            act_high=float(np.max(act_space.high)),
        )
    finally:
        env.close()


# -- the built-in task table --------------------------------------------------------------------------
D4RL_ENVS: tuple[str, ...] = ("halfcheetah", "hopper", "walker2d", "ant")
D4RL_DATASETS: tuple[str, ...] = (
    "random",
    "medium",
    "medium-replay",
    "medium-expert",
    "expert",
    "full-replay",
)
NEORL_ENVS: tuple[str, ...] = ("halfcheetah", "hopper", "walker2d")
NEORL_LEVELS: tuple[str, ...] = ("low", "medium", "high")
NEORL_TRAJECTORIES = 1000
MINARI_ENVS: tuple[str, ...] = ("halfcheetah", "hopper", "walker2d", "ant")
MINARI_DATASETS: tuple[str, ...] = ("simple", "medium", "expert")  # farama-minari/mujoco, v0
PENDULUM_QUALITIES: tuple[str, ...] = ("random", "medium", "medium-replay", "expert")
PENDULUM_EPISODES: dict[str, int] = {"random": 100, "medium": 100, "medium-replay": 100, "expert": 100}


def _build_tasks() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for env in D4RL_ENVS:
        ref = D4RL_REFERENCES[env]
        for ds in D4RL_DATASETS:
            name = f"{env}-{ds}-v2"
            tasks[name] = Task(
                name=name,
                family=env,
                source="d4rl",
                dataset_id=name,
                env_id=f"{_GYM_NAMES[env]}-v4",
                ref_min=ref.min,
                ref_max=ref.max,
                ref_source=ref.source,
                termination=env,
                loader={"obs_dims": 27} if env == "ant" else {},
            )
    for env in NEORL_ENVS:
        ref = NEORL_REFERENCES[env]
        for level in NEORL_LEVELS:
            name = f"neorl-{env}-{level}"
            tasks[name] = Task(
                name=name,
                family=env,
                source="neorl",
                dataset_id=f"{_GYM_NAMES[env]}-v3-{level}-{NEORL_TRAJECTORIES}-train",
                env_id=f"{_GYM_NAMES[env]}-v4",
                env_kwargs={"exclude_current_positions_from_observation": False},
                ref_min=ref.min,
                ref_max=ref.max,
                ref_source=ref.source,
                termination=f"{env}_neorl",
                loader={"neorl_env": f"{_GYM_NAMES[env]}-v3", "level": level, "num_trajectories": 1000},
            )
    for env in MINARI_ENVS:
        for ds in MINARI_DATASETS:
            name = f"mujoco/{env}/{ds}-v0"
            tasks[name] = Task(
                name=name,
                family=env,
                source="minari",
                dataset_id=name,
                env_id=f"{_GYM_NAMES[env]}-v5",  # until the dataset is cached; then its recorded env
                ref_source="Minari dataset metadata",
                termination=env,
            )
    for quality in PENDULUM_QUALITIES:
        name = f"pendulum-{quality}"
        tasks[name] = Task(
            name=name,
            family="pendulum",
            source="local",
            dataset_id=default_dataset_id("Pendulum-v1", quality),  # -v<collection protocol>
            env_id="Pendulum-v1",
            ref_min=PENDULUM_REFERENCE.min,
            ref_max=PENDULUM_REFERENCE.max,
            ref_source=PENDULUM_REFERENCE.source,
            termination="never",
            loader={"quality": quality, "episodes": PENDULUM_EPISODES[quality], "seed": 0},
        )
    return tasks


TASKS: dict[str, Task] = _build_tasks()


def task_names(suite: str | None = None) -> list[str]:
    """Every known task name, or the tasks of one suite, in the suite's order."""
    if suite is None:
        return list(TASKS)
    from zoo.tasks.suites import load_suite

    return list(load_suite(suite).task_names)


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name raises an error listing close matches and the suites."""
    if isinstance(name, Task):
        return name
    task = TASKS.get(name)
    if task is not None:
        return task
    close = difflib.get_close_matches(name, list(TASKS), n=5, cutoff=0.5)
    from zoo.paths import list_configs

    try:
        suites = ", ".join(sorted(list_configs("suites"))) or "(none)"
    except FileNotFoundError:
        suites = "(none)"
    hint = f"did you mean: {', '.join(close)}? " if close else ""
    raise UnknownTaskError(
        f"unknown task {name!r}; {hint}suites: {suites} (`zoo list` shows every task; "
        f"`task_names(suite)` the tasks of one suite)"
    )


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(task_name: str) -> str:
    """A path-safe form of a task name: ``/`` becomes ``__``, any other unsafe character ``_``."""
    name = _UNSAFE.sub("_", task_name.replace("/", "__")).strip(".")
    return name or "_"
