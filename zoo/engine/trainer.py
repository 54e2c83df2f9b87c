"""The one training loop of the zoo (DESIGN.md, "The composition").

One step t (0-based):

1. every ``rollout.every`` steps (t % every == 0, before the update): roll the policy out in the model
   from dataset states and append to the model buffer (dynamics.md §12);
2. draw a mixed batch, real rows first (sac.md §3);
3. ``rule.on_batch`` (ROMBRL re-simulates model rows);
4. one learner update, with the target-stage penalty if the recipe has one;
5. every ``rule.every`` steps ((t+1) % every == 0): ``rule.update`` (RAMBO/ROMI/ROMBRL phases);
6. every 1000 steps: the learner's epoch hook (cosine actor schedule, sac.md §4);
7. every ``log_every`` steps: read the accumulated metrics (the only host sync of the loop), check for
   divergence, write a JSONL line; every ``eval.every`` steps: evaluate; every ``checkpoint_every``:
   checkpoint.

Everything inside the loop stays on the device. A first Ctrl-C or SIGTERM finishes the current step, writes a
checkpoint and stops (``--resume`` continues from it); a divergence stops the run without overwriting
the last good checkpoint. A checkpoint holds everything the loop carries (networks, optimizers, random
streams, the model buffer, the metrics accumulated since the last log line, the wall time so far), so a
resumed run computes the same values as one that was never interrupted.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zoo.config import RunConfig
from zoo.data.transitions import Transitions
from zoo.device import resolve_device, rng_states, set_exact_numerics, set_rng_states
from zoo.engine.buffer import RingBuffer
from zoo.engine.diagnostics import ModelDiagnostics, plot_diagnostics
from zoo.engine.evaluate import EvalResult, eval_seed, evaluate_policy
from zoo.engine.normalizer import ObsNormalizer
from zoo.engine.pretrain import pretrained_dynamics
from zoo.engine.rollout import DivergenceError, model_rollout
from zoo.io import atomic_torch_save
from zoo.loggers import LoggerSet, RunInfo, logger_names
from zoo.protocols import Batch, Context, EnvSpec

STEPS_PER_EPOCH = 1000  # "epoch" in every spec: 1000 gradient steps


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after a clean stop on Ctrl-C or SIGTERM; the checkpoint is written."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Evaluation:
    step: int
    return_mean: float
    return_std: float
    score: float
    length_mean: float
    returns: list[float] = field(default_factory=list)


class Trainer:
    """Builds the components of a resolved config for one task and runs the loop."""

    def __init__(
        self,
        cfg: RunConfig,
        task: Any,
        run_dir: Path,
        cache_dir: Path,
        noise: str = "none",
        noise_scale: float = 0.05,
        progress: bool = True,
        download: bool = False,
        data: Transitions | None = None,
        log: Callable[[str], None] | None = None,
        suite: str = "custom",
        loggers: list[str] | None = None,
        diagnostics: bool = True,
    ) -> None:
        self.cfg = cfg
        self.task = task
        self.run_dir = Path(run_dir)
        self.cache_dir = Path(cache_dir)
        self.noise, self.noise_scale = noise, noise_scale
        self.progress = progress
        self.download = download
        self._raw_data = data
        self.log = log or (lambda msg: None)
        self.suite = suite
        self.extra_loggers = list(loggers or [])
        self.diagnostics_enabled = diagnostics
        self.diagnostics: list[dict[str, Any]] = []  # one record per diagnosis (model/kstep_k, ...)
        self._diagnose: ModelDiagnostics | None = None
        self._logs: LoggerSet | None = None
        self.device = resolve_device(cfg.device)
        self.evaluations: list[Evaluation] = []
        self.step = 0
        self._stop_requested = False
        self._acc: dict[str, torch.Tensor] = {}  # metrics summed since the last log line (on the device)
        self._acc_n = 0
        self._wall_before = 0.0  # wall time of earlier segments of this run (resume)
        self._segment_start = time.time()
        self.fit_report: Any = None
        self.pretrain_key: str | None = None
        self.pretrain_cached: bool | None = None

    # ------------------------------------------------------------------------------------------
    # Setup
    def setup(self) -> None:
        cfg = self.cfg
        self.numerics = set_exact_numerics()  # no TF32 for this run, whatever the environment set (issue 13)
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % (2**32))
        raw = self._raw_data if self._raw_data is not None else self.task.load(
            loader=cfg.data.loader, download=self.download
        )
        self.raw_data = raw
        self.buffer_restored = False
        self.fingerprint = raw.fingerprint()
        self.spec: EnvSpec = self.task.spec()
        if raw.obs_dim != self.spec.obs_dim or raw.act_dim != self.spec.act_dim:
            raise ValueError(
                f"dataset of {self.task.name} has obs/act dims ({raw.obs_dim}, {raw.act_dim}) but its "
                f"evaluation env {self.task.env_id} has ({self.spec.obs_dim}, {self.spec.act_dim})"
            )
        self.normalizer = ObsNormalizer.from_data(raw, cfg.data.normalize_obs).to(self.device)
        self.data = self.normalizer.apply(raw.to(self.device))
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)

        from zoo.dynamics.termination import get_termination

        self.termination = self.normalizer.wrap_termination(get_termination(self.task.termination))
        self.uses_model = cfg.rollout.horizon > 0 and cfg.batch.real_ratio < 1.0
        if self.uses_model or cfg.rule.name != "mle" or cfg.penalty.name != "none":
            self.model, self.fit_report, self.pretrain_key, self.pretrain_cached = pretrained_dynamics(
                cfg.dynamics,
                self.data,
                self.spec,
                self.device,
                cfg.seed,
                cfg.data.normalize_obs,
                self.cache_dir,
                progress=self.progress,
            )
        else:
            self.model = None
        torch.manual_seed(cfg.seed + 1)
        self.learner = cfg.learner.build(self.spec, self.device)
        total_epochs = max(1, math.ceil(cfg.steps / STEPS_PER_EPOCH))
        if hasattr(self.learner, "set_total_epochs"):
            self.learner.set_total_epochs(total_epochs)
        self.penalty = cfg.penalty.build()
        self.rule = cfg.rule.build()
        self.ctx = Context(
            data=self.data,
            model=self.model,
            learner=self.learner,
            termination=self.termination,
            normalizer=self.normalizer,
            device=self.device,
            generator=self.generator,
            step=0,
            spec=self.spec,
            extras={"config": cfg, "task": self.task},
        )
        self._check_target_clamp()
        if self.uses_model:
            rounds = max(1, math.ceil(STEPS_PER_EPOCH / cfg.rollout.every))
            capacity = cfg.rollout.retain * rounds * cfg.rollout.batch * cfg.rollout.horizon
            self.model_buffer: RingBuffer | None = RingBuffer(
                capacity, self.spec.obs_dim, self.spec.act_dim, self.device
            )
        else:
            self.model_buffer = None
        self.n_real = int(math.floor(cfg.batch.size * cfg.batch.real_ratio)) if self.uses_model else cfg.batch.size
        self.n_model = cfg.batch.size - self.n_real
        self.is_model = torch.cat(
            [torch.zeros(self.n_real, 1), torch.ones(self.n_model, 1)]
        ).to(self.device)
        reward_abs = float(self.data.reward.abs().max()) if len(self.data) else 1.0
        gamma = float(getattr(cfg.learner.cfg, "gamma", 0.99) or 0.99)
        self.q_limit = 100.0 * max(1.0, reward_abs) / max(1e-3, 1.0 - gamma)

    def _check_target_clamp(self) -> None:
        target_min = getattr(self.cfg.learner.cfg, "target_min", -math.inf)
        if target_min is not None and target_min > -math.inf:
            rmin = float(self.data.reward.min())
            if rmin < target_min:
                msg = (
                    f"learner.target_min = {target_min} clamps critic targets, but {self.task.name} has "
                    f"rewards down to {rmin:.3g}: the clamp changes the fixed point (sac.md §6 #5). "
                    "Set learner.target_min=-inf for this task."
                )
                warnings.warn(msg, stacklevel=2)
                self.log(f"[yellow]warning:[/] {msg}")

    # ------------------------------------------------------------------------------------------
    # Pieces of a step
    def rollout(self) -> dict[str, float]:
        assert self.model_buffer is not None
        cfg = self.cfg.rollout
        idx = torch.randint(len(self.data), (cfg.batch,), device=self.device, generator=self.generator)
        rollout_stage = getattr(self.penalty, "stage", "rollout") == "rollout"
        penalty = self.penalty if rollout_stage and self.cfg.penalty.name != "none" else None
        stats = model_rollout(
            self.model,
            self.learner,
            self.data.obs[idx],
            cfg.horizon,
            self.termination,
            self.model_buffer,
            penalty=penalty,
            ctx=self.ctx,
            generator=self.generator,
        )
        return stats.as_dict()

    def draw_batch(self) -> Batch:
        real_idx = torch.randint(len(self.data), (self.n_real,), device=self.device, generator=self.generator)
        d = self.data
        if self.n_model == 0:
            return Batch(
                obs=d.obs[real_idx],
                act=d.act[real_idx],
                reward=d.reward[real_idx],
                next_obs=d.next_obs[real_idx],
                terminal=d.terminal[real_idx],
                is_model=self.is_model,
                n_real=self.n_real,
            )
        assert self.model_buffer is not None
        m = self.model_buffer.sample(self.n_model, self.generator)
        return Batch(
            obs=torch.cat([d.obs[real_idx], m["obs"]]),
            act=torch.cat([d.act[real_idx], m["act"]]),
            reward=torch.cat([d.reward[real_idx], m["reward"]]),
            next_obs=torch.cat([d.next_obs[real_idx], m["next_obs"]]),
            terminal=torch.cat([d.terminal[real_idx], m["terminal"]]),
            is_model=self.is_model,
            n_real=self.n_real,
        )

    def evaluate(self) -> Evaluation:
        from zoo.tasks.references import normalized_score

        index = len(self.evaluations)
        n = self.cfg.eval.episodes
        result: EvalResult = evaluate_policy(
            lambda obs: self.learner.act(obs, deterministic=True)[0],
            self.task.make_env,
            episodes=n,
            seeds=[eval_seed(self.cfg.seed, index, k) for k in range(n)],
            normalizer=self.normalizer,
            device=self.device,
            noise=self.noise,
            noise_scale=self.noise_scale,
            noise_seed=eval_seed(self.cfg.seed, index, 10_007),
        )
        ev = Evaluation(
            step=self.step + 1,
            return_mean=result.return_mean,
            return_std=result.return_std,
            score=float(normalized_score(self.task, result.return_mean)),
            length_mean=float(result.lengths.mean()),
            returns=[float(r) for r in result.returns],
        )
        self.evaluations.append(ev)
        return ev

    # ------------------------------------------------------------------------------------------
    # Checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"

    def save_checkpoint(self) -> None:
        state = {
            "step": self.step,
            "learner": self.learner.state_dict(),
            "model": self.model.state_dict() if self.model is not None else None,
            "rule": self.rule.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "evaluations": [e.__dict__ for e in self.evaluations],
            "generator": self.generator.get_state(),
            "rng": rng_states(self.device),  # the global generators of the CPU and of every CUDA device
            "device": str(self.device),
            "config_hash": self.cfg.hash(),
            "model_buffer": self.model_buffer.state_dict() if self.model_buffer is not None else None,
            "metrics_acc": ({k: v.cpu() for k, v in self._acc.items()}, self._acc_n),
            "wall_s": self.wall_s(),
        }
        atomic_torch_save(state, self.checkpoint_path)

    def load_checkpoint(self) -> bool:
        if not self.checkpoint_path.is_file():
            return False
        state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
        written_on = torch.device(state.get("device", "cpu"))
        if written_on.type != self.device.type:
            raise RuntimeError(
                f"{self.checkpoint_path} was written on {written_on} but this run is on {self.device}: its random "
                f"states and its numbers belong to {written_on.type}. Resume it with --device {written_on.type}, "
                "or delete the checkpoint to start afresh"
            )
        if state.get("config_hash") != self.cfg.hash():
            raise RuntimeError(
                f"{self.checkpoint_path} was written by another configuration; refusing to resume it"
            )
        self.step = int(state["step"])
        self.learner.load_state_dict(state["learner"])
        if self.model is not None and state["model"] is not None:
            self.model.load_state_dict(state["model"])
        self.rule.load_state_dict(state["rule"])
        self.evaluations = [Evaluation(**e) for e in state["evaluations"]]
        self.generator.set_state(state["generator"].cpu())
        set_rng_states(state["rng"] if "rng" in state else {"cpu": state["torch_rng"]}, self.device)
        self.buffer_restored = False
        if self.model_buffer is not None and state.get("model_buffer") is not None:
            self.model_buffer.load_state_dict(state["model_buffer"])
            self.buffer_restored = True
        acc, self._acc_n = state.get("metrics_acc", ({}, 0))
        self._acc = {k: v.to(self.device) for k, v in acc.items()}
        self._wall_before = float(state.get("wall_s", 0.0))
        return True

    def wall_s(self) -> float:
        """Wall time of the whole run: earlier segments (from the checkpoint) plus this one."""
        return self._wall_before + (time.time() - self._segment_start)

    # ------------------------------------------------------------------------------------------
    # The loop
    def _request_stop(self, signum: int, frame: Any) -> None:
        if self._stop_requested:  # a second Ctrl-C (or SIGTERM) stops at once
            raise KeyboardInterrupt
        self._stop_requested = True
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.log(f"[yellow]{what}: finishing this step and writing a checkpoint (press Ctrl-C again to abort)[/]")

    def train(self, resume: bool = False, metrics_file: Path | None = None) -> dict[str, Any]:
        """Run the loop to ``cfg.steps``; returns the summary that goes into result.json."""
        metrics_path = metrics_file or (self.run_dir / "metrics.jsonl")
        metrics_path.parent.mkdir(parents=True, exist_ok=True)
        start_step = 0
        self._segment_start = time.time()
        if resume and self.load_checkpoint():
            start_step = self.step
            _truncate_metrics(metrics_path, start_step)
            self.diagnostics = _records_of_kind(metrics_path, "model")  # the plot keeps the points before the stop
            self.log(f"resuming at step {start_step}")
        elif metrics_path.exists():
            metrics_path.unlink()
        previous_handlers: dict[int, Any] = {}
        for signum in STOP_SIGNALS:
            try:
                previous_handlers[signum] = signal.signal(signum, self._request_stop)
            except ValueError:  # not the main thread (e.g. inside a worker): no handler
                break
        run = RunInfo(
            self.run_dir, self.suite, self.task.name, self.cfg.algo, self.cfg.hash(), self.cfg.seed,
            self.cfg.tree(), start_step, metrics_path,
        )
        try:
            self._logs = LoggerSet.build(logger_names(self.cfg.loggers, self.extra_loggers), run)
            try:
                if self.model is not None and self.diagnostics_enabled and self.cfg.diagnostics:
                    fit_extra = (self.fit_report.extra or {}) if self.fit_report is not None else {}
                    self._diagnose = ModelDiagnostics.prepare(
                        self.data, self.cfg.seed, fit_extra.get("holdout_rows"),
                        with_penalty=self.cfg.penalty.name != "none",
                    )
                if start_step == 0:
                    info = self.rule.before_training(self.ctx) or {}
                    if self.fit_report is not None:
                        info = {
                            "pretrain/epochs": self.fit_report.epochs,
                            "pretrain/holdout_loss": self.fit_report.holdout_loss,
                            "pretrain/cached": bool(self.pretrain_cached),
                            **info,
                        }
                    self._record({"step": 0, "kind": "setup", **info})
                    self.diagnose(0)
                elif self.uses_model and not self.buffer_restored and start_step % self.cfg.rollout.every:
                    # A checkpoint without the model buffer (older versions): refill it with one fresh round,
                    # unless the loop is about to roll out at this very step anyway.
                    self.ctx.step = start_step
                    self._record({"step": start_step, "kind": "rollout", **self.rollout()})
                self._loop(start_step)
            finally:
                self._logs.close()
                self._plot_diagnostics()
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        return self.summary(wall_s=self.wall_s())

    def _record(self, record: dict[str, Any]) -> None:
        """One metrics record to every logger of the run (metrics.jsonl always)."""
        assert self._logs is not None
        self._logs.log(_floats(record))

    def diagnose(self, step: int) -> dict[str, float]:
        """The model diagnostics (zoo.engine.diagnostics) at this step, logged as a ``model`` record."""
        if self._diagnose is None or self.model is None:
            return {}
        values = self._diagnose.measure(self.model, self.penalty, self.ctx)
        record = {"step": step, "kind": "model", **values}
        self.diagnostics.append(record)
        self._record(record)
        return values

    def _plot_diagnostics(self) -> None:
        """model_diagnostics.png in the run directory; a failing plot never fails the run."""
        if not self.diagnostics:
            return
        try:
            plot_diagnostics(self.diagnostics, self.run_dir / "model_diagnostics.png")
        except Exception as err:  # noqa: BLE001 (matplotlib failures are many and never the run's fault)
            self.log(f"[yellow]warning:[/] model diagnostics plot not written: {type(err).__name__}: {err}")

    def _loop(self, start_step: int) -> None:
        cfg = self.cfg
        target_penalty = None
        if getattr(self.penalty, "stage", "rollout") == "target":
            penalty, ctx = self.penalty, self.ctx

            def target_penalty(batch: Batch, learner: Any) -> torch.Tensor:
                return penalty(batch, learner, ctx)

        progress = _Progress(
            cfg.steps, start_step, enabled=self.progress, label=f"{cfg.algo} {self.task.name}", plain=_plain_output()
        )
        tick = time.time()
        with progress:
            for t in range(start_step, cfg.steps):
                self.step = t
                self.ctx.step = t
                if self.uses_model and t % cfg.rollout.every == 0:
                    self._record({"step": t, "kind": "rollout", **self.rollout()})
                batch = self.draw_batch()
                batch = self.rule.on_batch(batch, self.ctx)
                metrics = self.learner.update(batch, target_penalty=target_penalty)
                acc = self._acc
                for k, v in metrics.items():
                    acc[k] = acc[k] + v.detach() if k in acc else v.detach().clone()
                self._acc_n += 1
                if self.rule.every and (t + 1) % self.rule.every == 0:
                    rule_metrics = self.rule.update(self.ctx) or {}
                    self._record({"step": t + 1, "kind": "rule", **_floats(rule_metrics)})
                    self.diagnose(t + 1)
                if (t + 1) % STEPS_PER_EPOCH == 0 and hasattr(self.learner, "epoch_end"):
                    self.learner.epoch_end()
                last = t + 1 == cfg.steps
                if (t + 1) % cfg.log_every == 0 or last:
                    values = {k: float(v) / self._acc_n for k, v in acc.items()}  # the host sync
                    now = time.time()
                    values["sps"] = self._acc_n / max(now - tick, 1e-9)
                    tick, self._acc, self._acc_n = now, {}, 0
                    self._check_divergence(values, t + 1)
                    self._record({"step": t + 1, "kind": "train", **values})
                    progress.losses = values
                if cfg.eval.episodes > 0 and ((t + 1) % cfg.eval.every == 0 or last):
                    ev = self.evaluate()
                    self._record(
                        {
                            "step": t + 1,
                            "kind": "eval",
                            "return_mean": ev.return_mean,
                            "return_std": ev.return_std,
                            "score": ev.score,
                            "length_mean": ev.length_mean,
                        },
                    )
                    progress.evaluated(t + 1, ev.score, ev.return_mean)
                progress.advance(t + 1)
                self.step = t + 1
                if (cfg.checkpoint_every and (t + 1) % cfg.checkpoint_every == 0) or last:
                    self.save_checkpoint()
                if self._stop_requested:
                    self.save_checkpoint()
                    raise TrainingInterrupted(f"stopped at step {t + 1}; continue with --resume")

    def _check_divergence(self, values: dict[str, float], step: int) -> None:
        """Q estimates, or the TD error (sqrt of the critic loss), beyond 100x any plausible return."""
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        q_abs = max(abs(values.get("q_max", 0.0)), abs(values.get("q_mean", 0.0)))
        td = math.sqrt(max(values.get("critic_loss", 0.0), 0.0))
        if bad or max(q_abs, td) > self.q_limit:
            what = (
                f"non-finite {', '.join(bad)}"
                if bad
                else f"|Q| = {q_abs:.3g}, TD error = {td:.3g} (limit {self.q_limit:.3g})"
            )
            raise DivergenceError(
                f"training diverged by step {step}: {what}. The last good checkpoint "
                f"({self.checkpoint_path}) is kept; lower the learning rates or the rollout horizon."
            )

    # ------------------------------------------------------------------------------------------
    def summary(self, wall_s: float) -> dict[str, Any]:
        k = max(1, self.cfg.eval.last_k)
        last = self.evaluations[-k:]
        best = max(self.evaluations, key=lambda e: e.score) if self.evaluations else None
        return {
            "score": float(np.mean([e.score for e in last])) if last else None,
            "return": float(np.mean([e.return_mean for e in last])) if last else None,
            "score_evals": len(last),
            "best": {"score": best.score, "step": best.step, "note": "best single evaluation; never in tables"}
            if best
            else None,
            "steps": self.step,
            "wall_s": wall_s,
            "evaluations": len(self.evaluations),
            "pretrain_key": self.pretrain_key,
            "pretrain_cached": self.pretrain_cached,
            "dataset_fingerprint": self.fingerprint,
            "device": str(self.device),
            "device_kind": self.device.type,
        }


def _floats(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, torch.Tensor):
            v = v.detach().cpu()
            out[k] = float(v) if v.numel() == 1 else v.tolist()
        else:
            out[k] = v
    return out


def _records_of_kind(path: Path, kind: str) -> list[dict[str, Any]]:
    """The records of one kind in a metrics.jsonl file (lines cut by a crash are skipped)."""
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == kind:
            out.append(record)
    return out


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be written again): every line
    of a later step, and the rollout line of step ``step`` itself (a rollout happens at the start of its step,
    which the resumed loop runs again)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
            at = record.get("step", 0)
            if at < step or (at == step and record.get("kind") != "rollout"):
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
    path.write_text("".join(line + "\n" for line in kept))


def _plain_output() -> bool:
    """True when stdout is not a terminal (a file, a pipe, a cluster log): plain progress lines, no live bar."""
    try:
        return not sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed stdout
        return True


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


MAIN_LOSSES = ("critic_loss", "actor_loss", "alpha")
PLAIN_EVERY_S = 60.0  # a plain progress line at least this often, besides one per evaluation


class _Progress:
    """Progress of a run: a rich bar with the current score on a terminal; elsewhere (``plain``) one flushed line
    per evaluation and at least every minute with step, elapsed, ETA, score, return and the main losses. Silent
    when disabled (``--no-progress``)."""

    def __init__(self, total: int, start: int, enabled: bool, label: str, plain: bool = False) -> None:
        self.enabled = enabled
        self.plain = enabled and plain
        self.total, self.start, self.label = total, start, label
        self.score: float | None = None
        self.ret: float | None = None
        self.losses: dict[str, float] = {}
        self._progress = None
        self._task = None
        self._started = self._last_line = time.time()

    def __enter__(self) -> _Progress:
        self._started = self._last_line = time.time()
        if self.enabled and not self.plain:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("score {task.fields[score]}"),
                TimeRemainingColumn(),
            )
            self._progress.__enter__()
            self._task = self._progress.add_task(self.label, total=self.total, completed=self.start, score="-")
        return self

    def evaluated(self, completed: int, score: float, ret: float) -> None:
        self.score, self.ret = score, ret
        if self.plain:
            self.line(completed)

    def advance(self, completed: int) -> None:
        if completed % 100 != 0 and completed != self.total:
            return
        if self._progress is not None:
            score = "-" if self.score is None else f"{self.score:.1f}"
            self._progress.update(self._task, completed=completed, score=score)
        elif self.plain and time.time() - self._last_line >= PLAIN_EVERY_S:
            self.line(completed)

    def line(self, completed: int) -> str:
        """Print (flushed) and return one progress line."""
        now = time.time()
        elapsed = now - self._started
        done = completed - self.start
        eta = elapsed * (self.total - completed) / done if done > 0 else None
        parts = [
            f"{self.label} step {completed}/{self.total} ({100.0 * completed / max(1, self.total):.0f}%)",
            f"elapsed {_duration(elapsed)}",
            f"ETA {_duration(eta) if eta is not None else '-'}",
            f"score {self.score:.1f}" if self.score is not None else "score -",
            f"return {self.ret:.1f}" if self.ret is not None else "return -",
        ]
        parts += [f"{key} {self.losses[key]:.4g}" for key in MAIN_LOSSES if key in self.losses]
        text = " · ".join(parts)
        print(text, file=sys.stdout, flush=True)
        self._last_line = now
        return text

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
