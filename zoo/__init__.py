"""mbrl-zoo: offline model-based RL, composed from registered components.

From Python: ``zoo.train(algo, task, ...) -> dict`` and ``zoo.bench(suites, algos, seeds, ...) -> DataFrame``
(:mod:`zoo.api`; both are loaded on first use, so ``import zoo`` stays light).
"""

from typing import Any

from zoo.registry import REGISTRY, create, names, register

__version__ = "0.1.0"
__all__ = ["REGISTRY", "bench", "create", "names", "register", "train", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from zoo.api import train

        return train
    if name == "bench":  # the package zoo.bench, which is also callable as zoo.api.bench
        import importlib

        return importlib.import_module("zoo.bench")
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
