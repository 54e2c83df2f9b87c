"""Kind ``dynamics``: the vectorised Gaussian ensemble (dynamics.md) and the termination functions (§10).

Importing this package registers ``gaussian_ensemble`` with the registry.
"""

from zoo.dynamics.ensemble import GaussianEnsemble, holdout_size, permute_rows
from zoo.dynamics.layers import EnsembleLinear
from zoo.dynamics.termination import TERMINATIONS, get_termination, normalized

__all__ = [
    "TERMINATIONS",
    "EnsembleLinear",
    "GaussianEnsemble",
    "get_termination",
    "holdout_size",
    "normalized",
    "permute_rows",
]
