"""mbrl-zoo: offline model-based RL, composed from registered components."""

from zoo.registry import REGISTRY, create, names, register

__version__ = "0.1.0"
__all__ = ["REGISTRY", "create", "names", "register", "__version__"]
