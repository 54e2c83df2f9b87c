"""Kind ``rule``: model-update rules (mle now; rambo, romi, rombrl follow)."""

from zoo.rules.mle import MLERule
from zoo.rules.rambo import RamboRule
from zoo.rules.rombrl import RombrlRule
from zoo.rules.romi import RomiRule

__all__ = ["MLERule", "RamboRule", "RomiRule", "RombrlRule"]
