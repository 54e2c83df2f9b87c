"""Kind ``learner``: policy learners (sac.md, combo.md, TD3+BC). Importing this package registers them."""

from zoo.learners.cql import CQL
from zoo.learners.sac import SAC
from zoo.learners.td3bc import TD3BC

__all__ = ["CQL", "SAC", "TD3BC"]
