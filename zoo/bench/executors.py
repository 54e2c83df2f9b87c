"""Executors (kind ``executor``): where the jobs of a sweep run (issue 5, item 3).

An executor is built with ``REGISTRY.create("executor", name, **cfg)`` and follows :class:`Executor`: it is
started once with the sweep's :class:`~zoo.bench.jobs.WorkerEnv`, accepts jobs (a module-level function
plus picklable arguments) as ``concurrent.futures.Future`` objects, keeps ``slots`` jobs running at once,
can ask its running jobs to stop at their next step (a checkpoint is written, the run resumes later), and
shuts down.

- ``local`` (the default): a pool of ``workers`` processes on this machine (started with ``spawn``, each in
  its own process group so that the driver decides what a Ctrl-C does). Each worker runs torch with
  ``threads`` intra-op threads (default: cores // workers, at least 1): several torch processes each using
  every core slow one another down many times over. With GPUs, the workers share them: worker i sees only
  the i mod n-th of the n GPUs this process sees (its ``CUDA_VISIBLE_DEVICES`` entry, so SLURM's and
  Kubernetes' lists are honoured), unless the sweep names one (``--device cuda:N``: every worker on GPU N).
  Without ``--workers``, as many runs share a GPU as its free memory holds for the sweep's recipes (at most 4).
- ``ray``: every job is a Ray task with its own CPU/GPU request (``cpus_per_run``, ``gpus_per_run``), on
  a local ``ray.init()`` or an existing cluster (``address``). Ray is the optional extra ``mbrl-zoo[ray]``.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
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
RUNS_PER_GPU = 4  # at most; small networks leave a GPU idle between kernels, a few runs fill it
CUDA_CONTEXT_GB = 0.6  # a process's CUDA context and torch's kernels, before any tensor
DATASET_ROWS_BOUND = 2_000_000  # the largest D4RL datasets
GPU_MEMORY_HEADROOM = 0.9  # the share of a GPU's free memory the runs may plan on


def run_gpu_memory_gb(cfg: Any, obs_dim: int, act_dim: int) -> float:
    """A bound on one run's GPU memory: CUDA context, dataset, model buffer (the trainer's capacity rule) and the
    chunked rollout's activations. RAMBO and ROMI keep a 5M-row buffer, about 4x MOPO's."""
    import math

    from zoo.dynamics.ensemble import CUDA_INFERENCE_CHUNK
    from zoo.engine.trainer import STEPS_PER_EPOCH

    row_bytes = (2 * obs_dim + act_dim + 3) * 4  # obs, act, reward, next_obs, terminal (+ timeout in the data)
    rollout = cfg.rollout
    uses_model = rollout.horizon > 0 and cfg.batch.real_ratio < 1.0
    rounds = max(1, math.ceil(STEPS_PER_EPOCH / max(1, rollout.every)))
    buffer_rows = rollout.retain * rounds * rollout.batch * rollout.horizon if uses_model else 0
    dyn = cfg.dynamics.cfg
    members = int(getattr(dyn, "ensemble", 7) or 7)
    width = max([int(h) for h in getattr(dyn, "hidden", [200])] or [200])
    activations = 2 * members * min(rollout.batch, CUDA_INFERENCE_CHUNK) * width * 4 if uses_model else 0
    rollout_rows = rollout.batch * row_bytes * 4 if uses_model else 0  # a round's rows before they are stored
    total = DATASET_ROWS_BOUND * row_bytes + buffer_rows * row_bytes + activations + rollout_rows
    return CUDA_CONTEXT_GB + total / 2**30


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them (indices or UUIDs)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    return [str(i) for i in range(cuda_device_count())]


def gpu_free_memory_gb(gpus: list[str]) -> list[float]:
    """Free memory of each visible GPU from ``nvidia-smi`` (no CUDA context in the driver); total memory from
    torch when nvidia-smi is missing."""
    import subprocess

    if not gpus:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--id={','.join(gpus)}", "--query-gpu=memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        free = [float(line) / 1024 for line in out.split() if line.strip()]
        if len(free) == len(gpus):
            return free
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    import torch

    return [torch.cuda.get_device_properties(i).total_memory / 2**30 for i in range(len(gpus))]


def worker_gpu(index: int, gpus: list[str], device: str | None) -> str | None:
    """``CUDA_VISIBLE_DEVICES`` of local worker ``index``: one GPU of ``gpus`` (round robin), or None (leave it
    as inherited) when there is no GPU, the runs are on the CPU, or the sweep pins one GPU (``cuda:N``, which
    every worker must see under its own index)."""
    if not gpus or (device is not None and device.startswith("cuda:")) or device == "cpu":
        return None
    return gpus[index % len(gpus)]


def total_memory_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return float("inf")


def default_workers(
    cores: int | None = None,
    gpus: int | None = None,
    memory_gb: float | None = None,
    gpu_free_gb: list[float] | None = None,
    gpu_gb_per_run: float = 0.0,
) -> int:
    """Sensible parallelism: one single-threaded run per core on a CPU machine (small networks do not
    speed up with more threads, parallel runs do); with GPUs, up to 4 runs per GPU, fewer when a GPU's free
    memory (``gpu_free_gb``) does not hold that many runs of ``gpu_gb_per_run`` (at least one each), at most
    one per core; never more workers than the memory holds at about 1.5 GiB each."""
    cores = available_cores() if cores is None else cores
    gpus = cuda_device_count() if gpus is None else gpus
    memory_gb = total_memory_gb() if memory_gb is None else memory_gb
    per_gpu = [RUNS_PER_GPU] * gpus
    if gpu_free_gb is not None and gpu_gb_per_run > 0:
        per_gpu = [max(1, min(RUNS_PER_GPU, int(GPU_MEMORY_HEADROOM * free // gpu_gb_per_run))) for free in gpu_free_gb]
    wanted = min(cores, sum(per_gpu)) if gpus > 0 else cores
    by_memory = int(memory_gb // WORKER_MEMORY_GB) if memory_gb != float("inf") else wanted
    return max(1, min(wanted, by_memory))


PARENT_POLL_S = 1.0  # how often a worker checks that its driver is alive
ORPHAN_GRACE_S = 30.0  # an orphaned worker's clean stop (a checkpoint) before it exits regardless
EXIT_ORPHANED = 75  # exit status of a worker that outlived its driver by ORPHAN_GRACE_S
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> None:
    """End this worker when the driver that started it dies, even by SIGKILL (issue 11, item 2).

    A worker is detached from the driver's process group, so nothing else would stop it: it would finish the
    queued runs and then wait forever under PID 1 while a re-run writes the same run directories. On Linux the
    kernel sends SIGTERM at the driver's death (``prctl(PR_SET_PDEATHSIG)``); everywhere, a daemon thread
    notices the new parent within a second and sends the same SIGTERM. SIGTERM is the trainer's clean stop
    (checkpoint, resumable); after ``ORPHAN_GRACE_S`` the worker exits regardless.
    """
    driver = mp.parent_process()  # the process that started this worker (None outside multiprocessing)
    parent = driver.pid if driver is not None and driver.pid else os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(ORPHAN_GRACE_S)
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="zoo-parent-watch", daemon=True).start()
    if os.getppid() != parent:  # the driver died before the death signal was armed (or ever seen)
        os.kill(os.getpid(), signal.SIGTERM)


def _init_local_worker(env: WorkerEnv, counter: Any, gpus: list[str]) -> None:
    """Runs first in every local worker process."""
    try:
        os.setpgrp()  # a terminal's Ctrl-C reaches the driver only; it forwards one SIGINT per worker
    except OSError:
        pass
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer installs its own handler while training
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    gpu = worker_gpu(index, gpus, env.device)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
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
        self.gpu_names = visible_gpus() if cuda_device_count() else []
        self.gpus = len(self.gpu_names)
        self.slots = cfg.workers or default_workers(self.cores, self.gpus)
        self.threads = cfg.threads or max(1, self.cores // self.slots)
        self._pool: cf.ProcessPoolExecutor | None = None
        self._env: WorkerEnv | None = None

    def run_device(self, requested: str | None) -> str:
        """The device the runs get: the requested one, or (none or ``auto``) cuda when this machine has GPUs."""
        if requested in (None, "auto"):
            return "cuda" if self.gpus else "cpu"
        return requested

    def size_for_gpu(self, gb_per_run: float) -> None:
        """Without ``--workers``: as many runs per GPU as its free memory holds at ``gb_per_run`` (at most 4)."""
        if self.cfg.workers or not self.gpus:
            return
        free = gpu_free_memory_gb(self.gpu_names)
        self.slots = default_workers(self.cores, self.gpus, gpu_free_gb=free, gpu_gb_per_run=gb_per_run)
        if not self.cfg.threads:
            self.threads = max(1, self.cores // self.slots)

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
            initargs=(self._env, counter, self.gpu_names),
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
                if proc.is_alive():  # SIGTERM is a clean stop in a training worker; this one did not stop
                    proc.kill()
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

    def run_device(self, requested: str | None) -> str:
        """The device of the runs: ``cpu`` when Ray gives them no GPU (``gpus_per_run=0``, or a cluster without
        GPUs), so their config hash says so; ``cuda`` (the GPU Ray assigns a task is its ``cuda:0``) otherwise."""
        if self.cfg.gpus_per_run >= 0:  # settled by the config: no need to reach the cluster yet
            self.gpus_per_run = self.cfg.gpus_per_run
        else:
            self._connect()
        if self.gpus_per_run == 0:
            if requested not in (None, "auto", "cpu"):
                raise ValueError(
                    f"--device {requested}: the ray executor gives its runs no GPU (gpus_per_run=0, or the cluster "
                    "has none); set gpus_per_run > 0 or use --device cpu"
                )
            return "cpu"
        return "cpu" if requested == "cpu" else "cuda"

    def _connect(self) -> None:
        """Join (or start) Ray once and settle the GPU share of a run."""
        import ray

        if self._where:
            return
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

    def start(self, env: WorkerEnv) -> None:
        import ray

        self._connect()
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
            self._where = ""


def make_executor(name: str, **cfg: Any) -> Executor:
    """``REGISTRY.create("executor", name, **cfg)`` with Ray's install hint when it is missing."""
    from zoo.registry import REGISTRY

    executor = REGISTRY.create("executor", name, **cfg)
    for attr in ("slots", "start", "submit", "interrupt", "shutdown"):
        if not hasattr(executor, attr):
            raise TypeError(f"executor {name!r} does not follow zoo.bench.executors.Executor (no {attr!r})")
    return executor
