"""Kind ``rule``: model-update rules (mle now; rambo, romi, rombrl follow)."""

from zoo.rules.mle import MLERule

__all__ = ["MLERule"]
