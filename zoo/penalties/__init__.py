"""Kind ``penalty``: rollout-stage (none, mopo, disagreement) and target-stage (mobile) penalties.

Importing this package registers them (dynamics.md §11, mobile.md).
"""

from zoo.penalties.mobile import MobilePenalty
from zoo.penalties.rollout import DisagreementPenalty, MopoPenalty, NoPenalty

__all__ = ["DisagreementPenalty", "MobilePenalty", "MopoPenalty", "NoPenalty"]
