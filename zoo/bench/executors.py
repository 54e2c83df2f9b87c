"""Executors (kind ``executor``): where the jobs of a sweep run (issue 5, item 3).

An executor is built with ``REGISTRY.create("executor", name, **cfg)`` and follows :class:`Executor`: it is
started once with the sweep's :class:`~zoo.bench.jobs.WorkerEnv`, accepts jobs (a module-level function
plus picklable arguments) as ``concurrent.futures.Future`` objects, keeps ``slots`` jobs running at once,
can ask its running jobs to stop at their next step (a checkpoint is written, the run resumes later), and
shuts down.

- ``local`` (the default): a pool of ``workers`` processes on this machine (started with ``spawn``, each in
  its own process group so that the driver decides what a Ctrl-C does). Each worker runs torch with
  ``threads`` intra-op threads (default: cores // workers, at least 1): several torch processes each using
  every core slow one another down many times over. With GPUs, the workers share them (worker i uses GPU
  i mod the GPU count).
- ``ray``: every job is a Ray task with its own CPU/GPU request (``cpus_per_run``, ``gpus_per_run``), on
  a local ``ray.init()`` or an existing cluster (``address``). Ray is the optional extra ``mbrl-zoo[ray]``.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from zoo.bench.jobs import WorkerEnv, prepare_worker
from zoo.registry import MissingExtraError, register

RAY_INSTALL_HINT = (
    "the ray executor needs Ray, an optional extra: pip install 'mbrl-zoo[ray]' "
    "(in a source checkout: pip install -e '.[ray]')"
)


@runtime_checkable
class Executor(Protocol):
    """What the scheduler needs from an executor."""

    slots: int  # jobs kept running at once
    returns_files: bool  # True when workers may not share the driver's filesystem

    def start(self, env: WorkerEnv) -> None: ...

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future: ...

    def interrupt(self) -> None: ...

    def restart(self) -> None: ...

    def shutdown(self, wait: bool = True) -> None: ...

    def describe(self) -> str: ...


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def cuda_device_count() -> int:
    """CUDA GPUs visible here, without creating a CUDA context in the driver."""
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return 0


WORKER_MEMORY_GB = 1.5  # a D4RL run: its dataset, a 1.25M-row model buffer, torch itself


def total_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return float("inf")


def default_workers(cores: int | None = None, gpus: int | None = None, memory_gb: float | None = None) -> int:
    """Sensible parallelism: one single-threaded run per core on a CPU machine (small networks do not
    speed up with more threads, parallel runs do); with GPUs, up to 4 runs per GPU, at most one per core;
    never more workers than the memory holds at about 1.5 GiB each."""
    cores = available_cores() if cores is None else cores
    gpus = cuda_device_count() if gpus is None else gpus
    memory_gb = total_memory_gb() if memory_gb is None else memory_gb
    wanted = min(cores, 4 * gpus) if gpus > 0 else cores
    by_memory = int(memory_gb // WORKER_MEMORY_GB) if memory_gb != float("inf") else wanted
    return max(1, min(wanted, by_memory))


def _init_local_worker(env: WorkerEnv, counter: Any, gpus: int) -> None:
    """Runs first in every local worker process."""
    try:
        os.setpgrp()  # a terminal's Ctrl-C reaches the driver only; it forwards one SIGINT per worker
    except OSError:
        pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer installs its own handler while training
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if gpus > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
    prepare_worker(env)


@register("executor", "local")
class LocalExecutor:
    """A process pool on this machine (``--workers N``); one GPU may be shared by several workers."""

    @dataclass
    class Config:
        workers: int = 0  # 0: default_workers() for this machine
        threads: int = 0  # torch threads per worker; 0: cores // workers (at least 1)

    returns_files = False

    def __init__(self, cfg: Config) -> None:
        if cfg.workers < 0 or cfg.threads < 0:
            raise ValueError("executor local: workers and threads must be >= 0")
        self.cfg = cfg
        self.cores = available_cores()
        self.gpus = cuda_device_count()
        self.slots = cfg.workers or default_workers(self.cores, self.gpus)
        self.threads = cfg.threads or max(1, self.cores // self.slots)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._env: WorkerEnv | None = None

    def describe(self) -> str:
        gpu = f", sharing {self.gpus} GPU(s)" if self.gpus else ""
        return f"local executor: {self.slots} worker(s) × {self.threads} thread(s) on {self.cores} core(s){gpu}"

    def start(self, env: WorkerEnv) -> None:
        from dataclasses import replace

        self._env = replace(env, threads=self.threads)
        ctx = mp.get_context("spawn")  # never fork a process that may hold torch threads or a CUDA context
        counter = ctx.Value("i", 0)
        self._pool = cf.ProcessPoolExecutor(
            max_workers=self.slots,
            mp_context=ctx,
            initializer=_init_local_worker,
            initargs=(self._env, counter, self.gpus),
        )

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        assert self._pool is not None and self._env is not None, "start() first"
        return self._pool.submit(fn, self._env, *args)

    def _processes(self) -> list[Any]:
        return list(getattr(self._pool, "_processes", {}).values()) if self._pool is not None else []

    def interrupt(self) -> None:
        for proc in self._processes():
            if proc.is_alive() and proc.pid:
                try:
                    os.kill(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass

    def restart(self) -> None:
        """A new pool after a worker died (the old one is broken)."""
        self.shutdown(wait=False)
        assert self._env is not None
        self.start(self._env)

    def shutdown(self, wait: bool = True) -> None:
        if self._pool is None:
            return
        procs = self._processes()
        if not wait:
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        if not wait:
            for proc in procs:
                proc.join(timeout=5)
        self._pool = None


def _ray_job(fn: Callable[..., Any], env: WorkerEnv, *args: Any) -> Any:
    """The body of every Ray task: threads from the task's CPU request, then the job."""
    from dataclasses import replace

    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return fn(replace(env, threads=max(1, int(cpus))), *args)


@register("executor", "ray")
class RayExecutor:
    """Every run a Ray task with its CPU/GPU request, on a local ``ray.init()`` or a cluster (``--address``)."""

    @dataclass
    class Config:
        address: str = ""  # "": start a local Ray instance (or use the one this process already joined)
        workers: int = 0  # runs at once; 0: as many as the cluster's CPUs allow
        cpus_per_run: float = 1.0
        gpus_per_run: float = -1.0  # -1: 1/4 GPU per run when the cluster has GPUs, else 0
        num_cpus: int = 0  # CPUs of a local instance started here; 0: Ray's default (every core)

    returns_files = True

    def __init__(self, cfg: Config) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise MissingExtraError(RAY_INSTALL_HINT) from None
        if cfg.cpus_per_run <= 0:
            raise ValueError("executor ray: cpus_per_run must be > 0")
        self.cfg = cfg
        self.slots = max(1, cfg.workers)
        self._owns_ray = False
        self._remote: Any = None
        self._refs: dict[cf.Future, Any] = {}
        self.gpus_per_run = 0.0
        self._where = ""

    def describe(self) -> str:
        gpu = f", {self.gpus_per_run:g} GPU" if self.gpus_per_run else ""
        return f"ray executor ({self._where}): {self.slots} run(s) at once, {self.cfg.cpus_per_run:g} CPU{gpu} each"

    def start(self, env: WorkerEnv) -> None:
        import ray

        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.cfg.address:
                ray.init(address=self.cfg.address, **kwargs)
            else:
                ray.init(num_cpus=self.cfg.num_cpus or None, **kwargs)
            self._owns_ray = True
        self._where = self.cfg.address or "local instance"
        resources = ray.cluster_resources()
        cluster_gpus = float(resources.get("GPU", 0.0))
        self.gpus_per_run = self.cfg.gpus_per_run if self.cfg.gpus_per_run >= 0 else (0.25 if cluster_gpus else 0.0)
        if not self.cfg.workers:
            by_cpu = int(float(resources.get("CPU", 1.0)) // self.cfg.cpus_per_run)
            self.slots = max(1, by_cpu)
        self._env = env
        self._remote = ray.remote(max_retries=0)(_ray_job)

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        ref = self._remote.options(num_cpus=self.cfg.cpus_per_run, num_gpus=self.gpus_per_run).remote(
            fn, self._env, *args
        )
        fut = ref.future()
        self._refs[fut] = ref
        fut.add_done_callback(lambda f: self._refs.pop(f, None))
        return fut

    def interrupt(self) -> None:
        import ray

        for ref in list(self._refs.values()):
            try:
                ray.cancel(ref, force=False)
            except Exception:
                pass

    def restart(self) -> None:
        return None

    def shutdown(self, wait: bool = True) -> None:
        import ray

        if not wait:
            for ref in list(self._refs.values()):
                try:
                    ray.cancel(ref, force=True)
                except Exception:
                    pass
        self._refs.clear()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
            self._owns_ray = False


def make_executor(name: str, **cfg: Any) -> Executor:
    """``REGISTRY.create("executor", name, **cfg)`` with Ray's install hint when it is missing."""
    from zoo.registry import REGISTRY

    executor = REGISTRY.create("executor", name, **cfg)
    for attr in ("slots", "start", "submit", "interrupt", "shutdown"):
        if not hasattr(executor, attr):
            raise TypeError(f"executor {name!r} does not follow zoo.bench.executors.Executor (no {attr!r})")
    return executor
