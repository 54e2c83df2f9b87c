"""The GPU check (issue 13): one command that runs the CUDA path end to end and times it.

    python benchmarks/gpu_check.py             # on a CUDA machine; under 10 minutes on one GPU
    python benchmarks/gpu_check.py --dry       # every section at its tiniest, on the CPU (tests/test_gpu_check.py)
    python benchmarks/gpu_check.py --only sync,resume --json out.json

Sections, in order (``--only`` picks some):

- ``sync``: a few training steps of every recipe with every batch draw, ``rule.on_batch`` and learner update under
  ``torch.cuda.set_sync_debug_mode("error")`` (and the Python-level trap of tests/test_host_sync.py);
- ``modes``: one ROMBRL round in grad modes 2 and 3 with ``hessian`` fisher and exact, one ROMI phase with
  ``hypergrad`` one_step and exact × ``outer_grad`` jvp and vjp; every metric finite;
- ``resume``: a run stopped by the Ctrl-C path at a checkpoint and resumed equals the uninterrupted run (critics,
  actor, α and the global random streams: the SAC update draws its noise from the device's generator);
- ``recipes``: every recipe through the local executor (``zoo bench`` on the quick suite's pendulum-medium, the
  quick preset) on the device, then ``zoo eval`` of a finished run under observation noise;
- ``bench``: the README's speed table on the device: SAC update, 50k × 5 rollout, MOPO epoch, ROMI iteration,
  ROMBRL round, and one short run per recipe;
- ``populations`` (issue 15): MOPO at the recipe sizes as populations of P = 1, 2, 4, 8, 16 seeds: one batched
  update of every member, and 200 steps of the whole loop (rollouts every 100 steps, no evaluation), each against
  P times the population of one, measured here; member-steps per second and the ratio.

Prints one line per check and the timing table; exits 1 when a check failed. ``--dry`` runs on the CPU with tiny
sizes (and only the first recipe through the executor): it proves the script runs, not the GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from tests.fixtures import HopperShapedTask, hopper_shaped_rows  # noqa: E402
from tests.test_cuda_path import resumed_equals_uninterrupted  # noqa: E402
from tests.test_host_sync import cuda_syncs_raise, host_syncs_raise  # noqa: E402
from zoo.bench.presets import load_bench_preset  # noqa: E402
from zoo.bench.sweep import all_recipes  # noqa: E402
from zoo.config import resolve  # noqa: E402
from zoo.device import synchronize  # noqa: E402
from zoo.engine.trainer import Trainer  # noqa: E402

SECTIONS = ("sync", "modes", "resume", "recipes", "bench", "populations")


@dataclass
class Check:
    """What one run of the script found: pass/fail lines and timings."""

    device: str
    dry: bool
    results: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)

    def record(self, section: str, name: str, fn: Callable[[], str | None]) -> None:
        start = time.perf_counter()
        try:
            detail = fn() or ""
            ok = True
        except Exception as err:  # a failed check is reported, the others still run
            detail = f"{type(err).__name__}: {err}"
            ok = False
            traceback.print_exc()
        wall = time.perf_counter() - start
        self.results.append({"section": section, "check": name, "ok": ok, "wall_s": round(wall, 2), "detail": detail})
        print(f"[{'ok' if ok else 'FAIL'}] {section:8s} {name:40s} {wall:7.1f} s  {detail}", flush=True)

    def time(self, name: str, seconds: float, note: str = "") -> None:
        self.timings.append({"measurement": name, "seconds": seconds, "note": note})
        print(f"        {name:40s} {seconds:9.4f} s  {note}", flush=True)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if not r["ok"]]


def _sizes(dry: bool) -> dict[str, int]:
    return {"rows": 500 if dry else 20_000, "steps": 3, "rollout": 64 if dry else 1000}


def tiny_trainer(algo: str, device: str, tmp: Path, extra: list[str] | None = None, dry: bool = False,
                 steps: int = 3, rows: int | None = None, quick: bool = True) -> Trainer:
    """A recipe at the quick preset's sizes (``quick``; else the recipe's own network sizes), smaller still with
    ``dry``, on Hopper-shaped synthetic rows: no env, no dataset."""
    size = _sizes(dry)
    layer = load_bench_preset("quick").layer(algo) if quick or dry else {}
    overrides = [
        f"steps={steps}",
        f"log_every={steps}",
        "checkpoint_every=0",
        "eval.episodes=0",
        f'device="{device}"',
        "dynamics.max_epochs=1",
        f"rollout.every={steps}",
        f"rollout.batch={size['rollout']}",
        *(["dynamics.hidden=[16, 16]", "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]", "learner.hidden=[16, 16]"]
          if dry else []),
        *(extra or []),
    ]
    cfg = resolve(algo, overrides=overrides, preset=layer)
    torch.manual_seed(0)
    trainer = Trainer(cfg, HopperShapedTask(), tmp / algo / "run", tmp / "cache", progress=False,
                      data=hopper_shaped_rows(rows or size["rows"]))
    trainer.setup()
    return trainer


# -- sync -------------------------------------------------------------------------------------------------------
def check_sync(check: Check, tmp: Path) -> None:
    for algo in all_recipes():
        def run(algo: str = algo) -> str:
            trainer = tiny_trainer(algo, check.device, tmp / "sync", dry=check.dry)
            calls = {"n": 0}

            def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
                def call(*args: Any, **kwargs: Any) -> Any:
                    calls["n"] += 1
                    with host_syncs_raise(), cuda_syncs_raise(trainer.device):
                        return fn(*args, **kwargs)

                return call

            trainer.draw_batch_pop = guarded(trainer.draw_batch_pop)  # type: ignore[method-assign]
            trainer.rule.on_batch = guarded(trainer.rule.on_batch)  # type: ignore[method-assign]
            update = "update_pop" if trainer.batched else "update"
            setattr(trainer.learner, update, guarded(getattr(trainer.learner, update)))
            trainer.train()
            return f"{calls['n']} guarded calls, no sync"

        check.record("sync", algo, run)


# -- modes ------------------------------------------------------------------------------------------------------
def _rule_metrics(trainer: Trainer) -> dict[str, Any]:
    lines = (trainer.run_dir / "metrics.jsonl").read_text().splitlines()
    rules = [json.loads(line) for line in lines if '"kind": "rule"' in line]
    if not rules:
        raise AssertionError("no rule phase ran")
    bad = {k: v for k, v in rules[-1].items() if isinstance(v, float) and not math.isfinite(v)}
    if bad:
        raise AssertionError(f"non-finite rule metrics {bad}")
    return rules[-1]


def check_modes(check: Check, tmp: Path) -> None:
    small_rombrl = ["rule.every=2", "rule.num_rollouts=8", "rule.rollout_horizon=5", "rule.actor_epochs=2",
                    "rule.follower_epochs=1", "rule.score_horizon=2", "rule.down_sample=2", "rule.real_batch=16",
                    "rule.cg_iters=20"]
    for grad_mode in (2, 3):
        for hessian in ("fisher", "exact"):
            def run(grad_mode: int = grad_mode, hessian: str = hessian) -> str:
                extra = [*small_rombrl, f"rule.grad_mode={grad_mode}", f'rule.hessian="{hessian}"']
                trainer = tiny_trainer("rombrl", check.device, tmp / f"rombrl{grad_mode}{hessian}", extra,
                                       check.dry, steps=2)
                trainer.train()
                m = _rule_metrics(trainer)
                return ", ".join(f"{k}={m[k]:.3g}" for k in sorted(m) if k.startswith("h_norm") or "cg" in k)

            check.record("modes", f"rombrl grad_mode={grad_mode} hessian={hessian}", run)
    for hypergrad in ("one_step", "exact"):
        for outer in ("jvp", "vjp"):
            def run(hypergrad: str = hypergrad, outer: str = outer) -> str:
                extra = ["rule.every=2", "rule.iterations=3", "rule.batch_size=32", "rule.weight_hidden=[16, 16]",
                         f'rule.hypergrad="{hypergrad}"', f'rule.outer_grad="{outer}"', "rule.cg_iters=5"]
                trainer = tiny_trainer("romi", check.device, tmp / f"romi{hypergrad}{outer}", extra, check.dry,
                                       steps=2)
                trainer.train()
                m = _rule_metrics(trainer)
                return ", ".join(f"{k}={m[k]:.3g}" for k in ("meta", "rvl", "cg_residual") if k in m)

            check.record("modes", f"romi hypergrad={hypergrad} outer_grad={outer}", run)


# -- resume -----------------------------------------------------------------------------------------------------
def check_resume(check: Check, tmp: Path) -> None:
    def run() -> str:
        worst = resumed_equals_uninterrupted(check.device, tmp / "resume")
        if worst != 0.0:
            raise AssertionError(f"resumed run differs from the uninterrupted one by {worst:.3g}")
        return "learner state identical"

    check.record("resume", "Ctrl-C path, then --resume", run)


# -- recipes through the executor, then zoo eval under noise ------------------------------------------------------
def check_recipes(check: Check, tmp: Path) -> None:
    from rich.console import Console

    from zoo.bench.reeval import reevaluate
    from zoo.bench.sweep import bench

    out = tmp / "bench"
    recipes = all_recipes()[:1] if check.dry else all_recipes()
    overrides = ["steps=100", "eval.every=100", "eval.episodes=1", "rollout.every=50", "dynamics.max_epochs=1",
                 "log_every=50"] if check.dry else ["steps=2000", "eval.every=1000"]  # the quick preset, shorter
    outcome: dict[str, Any] = {}

    def run() -> str:
        result = bench(suites=["quick"], algos=recipes, tasks=["pendulum-medium"], seeds=1, preset="quick",
                       overrides=overrides, out=out, device=check.device, executor="local",
                       executor_cfg={"workers": 1 if check.dry else 3}, console=Console(file=open(os.devnull, "w")),
                       live=False)
        report = result.report
        outcome["runs"] = [spec.run_dir(out) for spec in result.plan.runs]
        if report.failed:
            raise AssertionError(f"failed runs: {report.failed}")
        scores = [json.loads((d / "result.json").read_text()) for d in outcome["runs"]]
        wrong = [s for s in scores if s.get("device_kind") != torch.device(check.device).type]
        if wrong:
            raise AssertionError(f"runs on the wrong device: {[(s['algo'], s.get('device')) for s in wrong]}")
        return ", ".join(f"{s['algo']} {s['score']:.1f} ({s['wall_s']:.0f} s)" for s in scores)

    check.record("recipes", f"{len(recipes)} recipe(s), local executor", run)

    def noisy_eval() -> str:
        if not outcome.get("runs"):
            raise AssertionError("no finished run to evaluate")
        episodes = 1 if check.dry else 5
        record = reevaluate(outcome["runs"][0], suite=noisy_quick_suite(tmp), episodes=episodes, device=check.device)
        if not str(record["noise"]).startswith("relative_delta") or not math.isfinite(record["return_mean"]):
            raise AssertionError(f"not a noisy evaluation: {record}")
        return f"noise {record['noise']}: return {record['return_mean']:.1f}"

    check.record("recipes", "zoo eval under observation noise", noisy_eval)


def noisy_quick_suite(tmp: Path) -> str:
    """A user suite ``quick-noisy`` (the quick suite with ROMBRL's observation noise), as ``--config-dir`` adds."""
    from zoo.paths import add_config_dir
    from zoo.tasks.suites import register_suites

    folder = tmp / "configs" / "suites"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "quick-noisy.toml").write_text(
        'description = "quick, noisy"\nbase = "quick"\nnoise = "relative_delta"\nnoise_scale = 0.05\n'
        'tasks = ["pendulum-medium"]\n'
    )
    add_config_dir(tmp / "configs")
    register_suites()
    return "quick-noisy"


# -- bench ------------------------------------------------------------------------------------------------------
def _timed(device: torch.device, fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up (kernels, allocator)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeat


def check_bench(check: Check, tmp: Path) -> None:
    dev = torch.device(check.device)
    dry = check.dry
    state: dict[str, Any] = {}

    def sac_update() -> str:
        trainer = tiny_trainer("mopo", check.device, tmp / "bench_sac", dry=dry, rows=None if dry else 100_000,
                               quick=False, extra=[] if dry else ["rollout.batch=50000"])
        trainer.rollout()
        state["trainer"] = trainer
        seconds = _timed(dev, lambda: trainer.learner.update(trainer.draw_batch()), 5 if dry else 200)
        check.time("SAC update (256 batch, 2 critics 256x256)", seconds)
        return f"{seconds * 1e3:.2f} ms"

    check.record("bench", "SAC update", sac_update)

    def rollout() -> str:
        trainer = state["trainer"]
        trainer.cfg.rollout.batch = 500 if dry else 50_000
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        seconds = _timed(dev, trainer.rollout, 1 if dry else 3)
        peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else float("nan")
        check.time("50k x 5 model rollout", seconds, f"peak GPU memory {peak:.0f} MiB" if dev.type == "cuda" else "")
        return f"{seconds:.2f} s"

    check.record("bench", "50k x 5 rollout", rollout)

    def mopo_epoch() -> str:
        trainer = state["trainer"]
        trainer.cfg.steps = 20 if dry else 1000
        trainer.cfg.log_every = trainer.cfg.rollout.every = trainer.cfg.steps  # 1000 steps, one rollout
        synchronize(dev)
        start = time.perf_counter()
        trainer.train()
        synchronize(dev)
        seconds = time.perf_counter() - start
        check.time("MOPO epoch (1000 steps + one rollout)", seconds)
        return f"{seconds:.2f} s"

    check.record("bench", "MOPO epoch", mopo_epoch)

    def romi_iteration() -> str:
        trainer = tiny_trainer("romi", check.device, tmp / "bench_romi", dry=dry,
                               extra=["rule.iterations=1", "rule.every=1000000"] + (
                                   ["rule.batch_size=32", "rule.weight_hidden=[16, 16]"] if dry else []), quick=False)
        rule = trainer.rule
        rule.cfg.iterations = 1
        seconds = _timed(dev, lambda: rule.update(trainer.ctx), 2 if dry else 20)
        check.time("ROMI iteration (batch 256, 10 samples)", seconds)
        return f"{seconds * 1e3:.1f} ms"

    check.record("bench", "ROMI iteration", romi_iteration)

    def rombrl_round() -> str:
        extra = ["rule.every=1000000", "rule.grad_mode=2"]
        if dry:
            extra += ["rule.num_rollouts=8", "rule.rollout_horizon=5", "rule.actor_epochs=1", "rule.follower_epochs=1",
                      "rule.score_horizon=2", "rule.down_sample=2", "rule.real_batch=16"]
        else:
            extra += ["rule.num_rollouts=250", "rule.rollout_horizon=100", "rule.actor_epochs=2",
                      "rule.follower_epochs=1", "rule.score_horizon=10", "rule.down_sample=8", "rule.real_batch=256"]
        trainer = tiny_trainer("rombrl", check.device, tmp / "bench_rombrl", dry=dry, extra=extra, quick=False)
        seconds = _timed(dev, lambda: trainer.rule.update(trainer.ctx), 1 if dry else 2)
        check.time("ROMBRL round (250x100, 2 leader + 1 follower epochs)", seconds)
        return f"{seconds:.2f} s"

    check.record("bench", "ROMBRL round", rombrl_round)

    for algo in all_recipes():
        def short_run(algo: str = algo) -> str:
            steps = 4 if dry else 1000
            trainer = tiny_trainer(algo, check.device, tmp / "bench_runs", dry=dry, steps=steps,
                                   extra=[f"rollout.every={min(250, steps)}", f"log_every={min(250, steps)}"])
            synchronize(dev)
            start = time.perf_counter()
            trainer.train()
            synchronize(dev)
            seconds = time.perf_counter() - start
            check.time(f"short run: {algo}, {steps} steps (quick preset)", seconds)
            return f"{seconds:.1f} s"

        check.record("bench", f"short run {algo}", short_run)


# -- populations ------------------------------------------------------------------------------------------------
def population_trainer(p: int, device: str, tmp: Path, dry: bool, steps: int) -> Trainer:
    """MOPO's recipe sizes (SAC 256 x 256, the 7 x 4 x 200 ensemble; tiny with ``dry``) for seeds 0..p-1 as one
    population on Hopper-shaped rows, rollouts of 10,000 starts every 100 steps, no evaluation."""
    overrides = [
        f"steps={steps}", f"log_every={steps}", "checkpoint_every=0", "eval.episodes=0", f'device="{device}"',
        "dynamics.max_epochs=1", "diagnostics=false", "rollout.every=100",
        f"rollout.batch={64 if dry else 10_000}",
        *(["dynamics.hidden=[16, 16]", "dynamics.weight_decay=[2.5e-5, 5e-5, 1e-4]", "learner.hidden=[16, 16]"]
          if dry else []),
    ]
    cfgs = [resolve("mopo", overrides=[*overrides, f"seed={s}"]) for s in range(p)]
    trainer = Trainer(cfgs, HopperShapedTask(), [tmp / f"seed{s}" for s in range(p)], tmp.parent / "cache",
                      progress=False, data=hopper_shaped_rows(500 if dry else 20_000))
    trainer.setup()
    return trainer


def check_populations(check: Check, tmp: Path) -> None:
    dev = torch.device(check.device)
    dry = check.dry
    sizes = (1, 2) if dry else (1, 2, 4, 8, 16)
    steps = 4 if dry else 200
    update: dict[int, float] = {}
    loop: dict[int, float] = {}
    for p in sizes:
        def run(p: int = p) -> str:
            trainer = population_trainer(p, check.device, tmp / "populations" / f"P{p}", dry, steps)
            for k in range(p):
                trainer.rollout(k)
            batch = trainer.draw_batch_pop()
            update[p] = _timed(dev, lambda: trainer.learner.update_pop(batch), 3 if dry else 100)
            fresh = population_trainer(p, check.device, tmp / "populations" / f"P{p}-loop", dry, steps)
            synchronize(dev)
            start = time.perf_counter()
            fresh.train_members()
            synchronize(dev)
            loop[p] = time.perf_counter() - start
            ratio_u = update[1] * p / update[p]
            ratio_l = loop[1] * p / loop[p]
            check.time(f"population update, P={p} (recipe sizes)", update[p],
                       f"{p / update[p]:.0f} member-updates/s; {ratio_u:.2f}x P single updates")
            check.time(f"population loop, P={p}, {steps} steps", loop[p],
                       f"{p * steps / loop[p]:.0f} member-steps/s; {ratio_l:.2f}x P single runs")
            return f"update {ratio_u:.2f}x, loop {ratio_l:.2f}x of P single runs"

        check.record("populations", f"P={p}", run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="tiny sizes on the CPU: proves the script runs")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --dry)")
    parser.add_argument("--only", default="", help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, default=None, help="write the results and timings here")
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.dry else "cuda")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); use --dry on the CPU")
        return 2
    sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    check = Check(device=device, dry=args.dry)
    env = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "cpu"
    print(f"gpu_check on {device} ({env}), torch {torch.__version__}, sections {', '.join(sections)}", flush=True)
    start = time.perf_counter()
    runners = {"sync": check_sync, "modes": check_modes, "resume": check_resume, "recipes": check_recipes,
               "bench": check_bench, "populations": check_populations}
    with tempfile.TemporaryDirectory(prefix="zoo_gpu_check_") as tmp:
        os.environ.setdefault("ZOO_DATA", str(Path(tmp) / "data"))
        for name in sections:
            runners[name](check, Path(tmp))
    total = time.perf_counter() - start
    print(f"\n{len(check.results) - len(check.failed)}/{len(check.results)} checks passed in {total:.0f} s")
    if check.timings:
        print("\n| measurement | seconds | note |\n|---|---:|---|")
        for t in check.timings:
            print(f"| {t['measurement']} | {t['seconds']:.4f} | {t['note']} |")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "gpu": env, "torch": torch.__version__, "wall_s": total,
                                         "results": check.results, "timings": check.timings}, indent=2))
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
