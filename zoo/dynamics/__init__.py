"""Kind ``dynamics``: the vectorised Gaussian ensemble (dynamics.md), MOReL's deterministic ensemble, and the
termination functions (dynamics.md §10).

Importing this package registers ``gaussian_ensemble`` and ``deterministic_ensemble`` with the registry.
"""

from zoo.dynamics.deterministic import DeterministicEnsemble, NoLikelihoodError
from zoo.dynamics.ensemble import GaussianEnsemble, holdout_size, permute_rows
from zoo.dynamics.layers import EnsembleLinear
from zoo.dynamics.termination import TERMINATIONS, get_termination, normalized

__all__ = [
    "TERMINATIONS",
    "DeterministicEnsemble",
    "EnsembleLinear",
    "GaussianEnsemble",
    "NoLikelihoodError",
    "get_termination",
    "holdout_size",
    "normalized",
    "permute_rows",
]
