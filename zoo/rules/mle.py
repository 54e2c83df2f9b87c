"""The ``mle`` rule: the pretrained maximum-likelihood model is kept as it is (MOPO, MOBILE, MBPO)."""

from __future__ import annotations

from zoo.protocols import Rule
from zoo.registry import register


@register("rule", "mle")
class MLERule(Rule):
    """Keep the pretrained MLE ensemble fixed; uses none of the rule hooks."""

    every = 0
    supports_population = True  # nothing to do per run (zoo.engine.population)
