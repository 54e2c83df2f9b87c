"""The benchmark harness (DESIGN.md layout; issue 5): grid expansion (:mod:`zoo.bench.grid`), presets,
scheduling with one pretraining job per distinct ensemble (:mod:`zoo.bench.scheduler`), executors of kind
``executor`` (:mod:`zoo.bench.executors`: ``local``, ``ray``), the result store, leaderboards with IQM and
stratified-bootstrap intervals (:mod:`zoo.bench.leaderboard`, :mod:`zoo.bench.stats`) and re-evaluation of
saved policies (:mod:`zoo.bench.reeval`). ``zoo.bench.sweep.bench`` is what ``zoo bench`` runs."""

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    """``zoo.bench`` is this package and, called, :func:`zoo.bench.api.bench` (issue 12, item 4): ``zoo.bench(...)``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from zoo.bench.api import bench

        return bench(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
