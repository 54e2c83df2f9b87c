"""The benchmark harness (DESIGN.md layout; issue 5): grid expansion (:mod:`zoo.bench.grid`), presets,
scheduling with one pretraining job per distinct ensemble (:mod:`zoo.bench.scheduler`), executors of kind
``executor`` (:mod:`zoo.bench.executors`: ``local``, ``ray``), the result store, leaderboards with IQM and
stratified-bootstrap intervals (:mod:`zoo.bench.leaderboard`, :mod:`zoo.bench.stats`) and re-evaluation of
saved policies (:mod:`zoo.bench.reeval`). ``zoo.bench.sweep.bench`` is what ``zoo bench`` runs."""
