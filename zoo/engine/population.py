"""Populations: P runs of one recipe on one task trained as one batched program (issue 15).

Design (DESIGN.md, "Performance rules"). What a run does every step (draw a batch, one learner update) is what
costs: at the zoo's network sizes one run's step is a few hundred small kernels, bound by per-operation overhead on
a CPU and by launch latency on a GPU. A population stacks that work over a leading population axis:

- the **learner** holds P runs' networks stacked ([P, ...] for the actor, [P·N, ...] for the critics), one fused
  Adam per network kind (elementwise, so P independent Adams), and takes batches [P, B, ·] (``update_pop``);
- the **batch** of every run is drawn at once: the real rows with one gather from the shared dataset, the model
  rows with one gather from the P model buffers stacked as [P, capacity, ·] (:class:`PopulationBuffer`);
- every random draw of run k comes from run k's own generators (the trainer's, seeded ``seed``, for batches and
  rollouts; the learner's, seeded ``seed + 1``, for initialisation and update noise), in the same order as the
  single run of that seed, so member k computes what that single run computes, up to the last bits of batched
  versus single reductions.

What happens every few hundred steps (model rollouts, evaluation, rule phases, model diagnostics) runs per member
through the single-run code with run k's own model, penalty, rule and context, and a view of run k in the learner
(``learner.member(k)``): it costs what P single runs cost, and needs no population support from dynamics models,
penalties or rules beyond running per member. Target-stage penalties (MOBILE) are called per member inside the
batched update.

A single run is the population of one through the same trainer. A component joins populations when its class says
``supports_population = True`` (learners: ``update_pop``, ``member``, ``member_state_dict``,
``load_member_states``; rules: no hook that needs the learner's parameters themselves); anything else runs as
populations of one. Keys a component lists in ``population_keys`` may differ between the members of a population;
every other key of the resolved config (sizes, horizons, learning rates, component names) must be equal.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from zoo.config import RunConfig
from zoo.engine.buffer import RingBuffer, field_widths
from zoo.registry import REGISTRY

# Top-level and engine keys that may differ between members (besides the component keys their classes declare).
POPULATION_ENGINE_KEYS = ("seed", "loggers", "diagnostics")
KINDS_WITH_MEMBERS = ("learner", "rule", "penalty", "dynamics")


def component_class(cfg: RunConfig, kind: str) -> Any:
    section = getattr(cfg, kind)
    return REGISTRY.get(kind, section.name)


def population_support(cfg: RunConfig) -> tuple[bool, str]:
    """Whether runs of ``cfg`` can share a population; when not, which component prevents it (the reason)."""
    learner = component_class(cfg, "learner")
    if not getattr(learner, "supports_population", False):
        return False, f"learner {cfg.learner.name!r} has no population support"
    rule = component_class(cfg, "rule")
    if not getattr(rule, "supports_population", False):
        return False, f"rule {cfg.rule.name!r} has no population support"
    return True, ""


def population_keys(cfg: RunConfig) -> dict[str, tuple[str, ...]]:
    """Per component section, the keys its class declares population-able."""
    return {kind: tuple(getattr(component_class(cfg, kind), "population_keys", ())) for kind in KINDS_WITH_MEMBERS}


def population_signature(cfg: RunConfig) -> str:
    """What must be equal between the members of one population: the resolved tree without the seed, the
    reporting keys and the population-able keys of its components (a JSON string, comparable and hashable)."""
    import json

    tree = cfg.tree()
    for key in POPULATION_ENGINE_KEYS:
        tree.pop(key, None)
    for kind, keys in population_keys(cfg).items():
        for key in keys:
            tree[kind].pop(key, None)
    return json.dumps(tree, sort_keys=True, default=str)


def check_population(cfgs: list[RunConfig]) -> None:
    """Refuse a population whose members differ in a key that is not population-able, or whose components do
    not support populations (for more than one member); the error names the key or the component."""
    if not cfgs:
        raise ValueError("a population needs at least one member")
    if len(cfgs) == 1:
        return
    ok, why = population_support(cfgs[0])
    if not ok:
        raise ValueError(
            f"{cfgs[0].algo}: {why}; train its seeds as separate runs (zoo train --seed N for each; zoo bench "
            "does so by itself)"
        )
    runs = [(c.hash(), c.seed) for c in cfgs]  # a run is its config hash (the seed left out) and its seed
    if len(set(runs)) != len(runs):
        raise ValueError(f"a population cannot hold the same run twice (seeds {[c.seed for c in cfgs]})")
    first = cfgs[0].tree()
    signature = population_signature(cfgs[0])
    for other in cfgs[1:]:
        if population_signature(other) != signature:
            diff = _first_difference(first, other.tree(), population_keys(cfgs[0]))
            raise ValueError(
                f"runs of one population may differ only in the seed and in population-able keys; {diff} differs"
            )


def _first_difference(a: dict[str, Any], b: dict[str, Any], allowed: dict[str, tuple[str, ...]]) -> str:
    for section, value in a.items():
        if section in POPULATION_ENGINE_KEYS:
            continue
        other = b.get(section)
        if isinstance(value, dict) and isinstance(other, dict):
            for key in sorted(set(value) | set(other)):
                if key in allowed.get(section, ()):
                    continue
                if value.get(key) != other.get(key):
                    return f"{section}.{key} ({value.get(key)!r} vs {other.get(key)!r})"
        elif value != other:
            return f"{section} ({value!r} vs {other!r})"
    return "a key"


def buffer_capacity(cfg: RunConfig, steps_per_epoch: int) -> int:
    """Rows a run's model buffer holds: ``retain`` epochs of rollouts (dynamics.md §12.3)."""
    rounds = max(1, math.ceil(steps_per_epoch / cfg.rollout.every))
    return cfg.rollout.retain * rounds * cfg.rollout.batch * cfg.rollout.horizon


class PopulationBuffer:
    """P model buffers stacked as [P, capacity, ·]: ``members[k]`` is run k's :class:`RingBuffer` (a view, written
    by its rollouts), :meth:`sample` draws every run's rows with one gather per field."""

    def __init__(self, population: int, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.capacity = int(capacity)
        widths = field_widths(obs_dim, act_dim)
        self.storage = {k: torch.zeros(population, self.capacity, w, device=device) for k, w in widths.items()}
        self.members = [
            RingBuffer(capacity, obs_dim, act_dim, device, storage={k: v[p] for k, v in self.storage.items()})
            for p in range(population)
        ]
        self._offsets = (torch.arange(population, device=device) * self.capacity).view(-1, 1)

    def sample(self, n: int, generators: list[torch.Generator]) -> dict[str, torch.Tensor]:
        """``n`` rows of every run ([P, n, ·]), run k's uniformly with replacement from its rows by its generator."""
        idx = [member.sample_index(n, gen) for member, gen in zip(self.members, generators, strict=True)]
        flat = (torch.stack(idx) + self._offsets).view(-1)
        p = len(self.members)
        return {k: v.view(p * self.capacity, -1)[flat].view(p, n, -1) for k, v in self.storage.items()}


__all__ = [
    "PopulationBuffer",
    "buffer_capacity",
    "check_population",
    "population_signature",
    "population_support",
]
