"""The sweep of test_bench_sweep.py with ``--executor ray`` on a local Ray instance (``slow`` tier): every run a
Ray task, the plugin recipe selectable in the Ray workers, one shared ensemble per seed, the failing run recorded,
the leaderboard written. Skipped only when Ray is not installed (``.ci/run`` installs the ``ray`` extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_bench_sweep import bench_args, errors_of, results_of, run_zoo, write_plugin
from zoo.bench.leaderboard import FORMATS
from zoo.cli import EXIT_RUNS_FAILED
from zoo.engine.pretrain import cached_keys

pytestmark = pytest.mark.slow


def test_sweep_on_a_local_ray_instance(quick_env: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]' (CI installs it)")
    plugin_dir, recipe = write_plugin(tmp_path)
    out = tmp_path / "results"
    args = bench_args(out, recipe, "--executor", "ray", "--executor-set", "num_cpus=2", "--workers", "2")
    done = run_zoo(args, plugin_dir)
    assert done.returncode == EXIT_RUNS_FAILED, done.stdout + done.stderr  # the plugin's failing run
    assert "ray executor (local instance): 2 run(s) at once, 1 CPU each" in done.stdout
    results, errors = results_of(out), errors_of(out)
    assert len(results) == 5 and list(errors) == [e for e in errors if "/flaky/" in e and e.endswith("seed1")]
    assert "deliberate failure" in next(iter(errors.values()))["error"]
    keys = cached_keys(out / "cache")
    assert len(keys) == 2 and all(r["pretrain_cached"] is True and r["pretrain_key"] in keys for r in results.values())
    for fmt in FORMATS:
        assert (out / "leaderboard" / f"quick.{fmt}").is_file()
    # Ray workers ran the jobs, not this process's pool: a rerun finds everything finished.
    again = run_zoo(args, plugin_dir)
    assert again.returncode == EXIT_RUNS_FAILED and "0 run(s) trained, 5 already finished, 1 failed" in again.stdout
