"""Executor contract (kind ``executor``): every registered executor starts, runs jobs in workers set up with the
sweep's threads and plugins, returns their results as futures, and shuts down. Ray's is slow to start: it runs
in the slow tier (and is skipped without Ray)."""

from __future__ import annotations

import builtins
import concurrent.futures as cf

import pytest

from zoo.bench.executors import Executor, LocalExecutor, MissingExtraError, default_workers, make_executor
from zoo.bench.jobs import WorkerEnv, worker_info
from zoo.registry import REGISTRY

CONFIGS = {"local": {"workers": 1, "threads": 1}, "ray": {"workers": 2, "num_cpus": 2}}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "ray" else n for n in REGISTRY.names("executor")],
)
def test_executor_contract(name: str) -> None:
    if name == "ray":
        pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
    executor = make_executor(name, **CONFIGS.get(name, {}))
    assert isinstance(executor, Executor)
    assert executor.slots >= 1 and isinstance(executor.describe(), str)
    executor.start(WorkerEnv(plugins=("zoo.penalties",)))
    try:
        futures = [executor.submit(worker_info, {"echo": k}) for k in range(3)]
        assert all(isinstance(f, cf.Future) for f in futures)
        infos = [f.result(timeout=300) for f in futures]
    finally:
        executor.shutdown(wait=True)
    assert [i["echo"] for i in infos] == [0, 1, 2]
    for info in infos:
        assert info["torch_threads"] == 1 and info["env"]["OMP_NUM_THREADS"] == "1"  # no oversubscription
        assert "mle" in info["rules"] and info["plugins"] == ["zoo.penalties"]


def test_local_executor_threads_and_defaults() -> None:
    assert default_workers(cores=2, gpus=0, memory_gb=64) == 2 and default_workers(cores=16, gpus=1, memory_gb=64) == 4
    assert default_workers(cores=64, gpus=0, memory_gb=16) == 10 and default_workers(cores=8, memory_gb=1) == 1
    ex = LocalExecutor(LocalExecutor.Config(workers=3))
    assert ex.slots == 3 and ex.threads == max(1, ex.cores // 3)
    assert "3 worker(s)" in ex.describe()
    with pytest.raises(ValueError):
        LocalExecutor(LocalExecutor.Config(workers=-1))


def test_ray_executor_without_ray_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(MissingExtraError, match=r"pip install 'mbrl-zoo\[ray\]'"):
        make_executor("ray")
