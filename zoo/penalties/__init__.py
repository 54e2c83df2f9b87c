"""Kind ``penalty``: rollout-stage (none, mopo, disagreement, morel) and target-stage (mobile) penalties.

Importing this package registers them (dynamics.md §11, mobile.md, zoo.penalties.morel).
"""

from zoo.penalties.mobile import MobilePenalty
from zoo.penalties.morel import MorelHaltPenalty
from zoo.penalties.rollout import DisagreementPenalty, MopoPenalty, NoPenalty

__all__ = ["DisagreementPenalty", "MobilePenalty", "MorelHaltPenalty", "MopoPenalty", "NoPenalty"]
