"""Kind ``learner``: policy learners (sac.md). Importing this package registers them."""

from zoo.learners.sac import SAC

__all__ = ["SAC"]
