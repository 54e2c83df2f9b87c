"""The one training loop of the zoo (DESIGN.md, "The composition").

It trains a *population*: P runs of one recipe on one task, each with its own seed, random streams, model,
buffers, evaluations and run directory, as one batched program (zoo.engine.population has the design). A single
run is the population of one through the same loop.

One step t (0-based), for every live run:

1. every ``rollout.every`` steps (t % every == 0, before the update): roll the policy out in the model
   from dataset states and append to the model buffer (dynamics.md §12), per run;
2. draw a mixed batch, real rows first (sac.md §3), every run's at once ([P, B, ·]);
3. ``rule.on_batch`` (ROMBRL re-simulates model rows), per run;
4. one learner update of every run at once, with the target-stage penalty if the recipe has one;
5. every ``rule.every`` steps ((t+1) % every == 0): ``rule.update`` (RAMBO/ROMI/ROMBRL phases), per run;
6. every 1000 steps: the learner's epoch hook (cosine actor schedule, sac.md §4);
7. every ``log_every`` steps: read the accumulated metrics (the only host sync of the loop), check each run for
   divergence, write its JSONL line; every ``eval.every`` steps: evaluate; every ``checkpoint_every``:
   checkpoint.

Everything inside the loop stays on the device. A first Ctrl-C or SIGTERM finishes the current step, writes every
run's checkpoint and stops (``--resume`` continues from them); a divergence stops that run alone: it is masked out
of everything that follows (rollouts, evaluations, checkpoints, metrics; its slice of the batched update computes on
but nothing reads it), and its last good checkpoint is kept. A checkpoint holds everything the loop carries for its
run (networks, optimizers, random streams, the model buffer, the metrics accumulated since the last log line, the
wall time so far), so a resumed run computes the same values as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
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
from zoo.engine.population import PopulationBuffer, buffer_capacity, check_population
from zoo.engine.pretrain import pretrained_dynamics
from zoo.engine.rollout import DivergenceError, model_rollout
from zoo.io import atomic_torch_save
from zoo.loggers import LoggerSet, RunInfo, logger_names
from zoo.protocols import Batch, Context, EnvSpec, Rule

STEPS_PER_EPOCH = 1000  # "epoch" in every spec: 1000 gradient steps


class TrainingInterrupted(KeyboardInterrupt):
    """Raised after a clean stop on Ctrl-C or SIGTERM; the checkpoints are written."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Evaluation:
    step: int
    return_mean: float
    return_std: float
    score: float
    length_mean: float
    returns: list[float] = field(default_factory=list)


@dataclass
class Member:
    """One run of a population: its identity, its own components and random streams, and its fate."""

    k: int
    cfg: RunConfig
    run_dir: Path
    generator: torch.Generator  # batches and rollouts, seeded ``seed``
    learner_generator: torch.Generator  # the learner's initialisation and update noise, seeded ``seed + 1``
    model: Any = None
    fit_report: Any = None
    pretrain_key: str | None = None
    pretrain_cached: bool | None = None
    penalty: Any = None
    rule: Any = None
    ctx: Any = None
    model_buffer: RingBuffer | None = None
    evaluations: list[Evaluation] = field(default_factory=list)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    diagnose: ModelDiagnostics | None = None
    logs: LoggerSet | None = None
    buffer_restored: bool = False
    wall_before: float = 0.0
    error: DivergenceError | None = None  # set when the run diverged: it is masked out from then on
    stopped_at: int | None = None
    # The run's own state of torch's global generators: components that draw from them (a rule's network
    # initialisation, say) see the stream the single run of this seed would see (Trainer.own_rng).
    rng: dict[str, Any] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.error is None

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / "checkpoints" / "last.pt"


class Trainer:
    """Builds the components of resolved configs for one task and runs the loop.

    ``cfg`` and ``run_dir`` are one run's, or lists with one entry per member of a population (the same recipe,
    differing only in the seed and in population-able keys: zoo.engine.population.check_population). The
    single-run attributes (``evaluations``, ``model``, ``rule``, ``ctx``, ...) are member 0's.
    """

    def __init__(
        self,
        cfg: RunConfig | list[RunConfig],
        task: Any,
        run_dir: Path | list[Path],
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
        cfgs = list(cfg) if isinstance(cfg, list) else [cfg]
        run_dirs = [Path(d) for d in run_dir] if isinstance(run_dir, list) else [Path(run_dir)]
        if len(cfgs) != len(run_dirs):
            raise ValueError(f"{len(cfgs)} configs but {len(run_dirs)} run directories")
        check_population(cfgs)
        self.cfgs = cfgs
        self.cfg = cfgs[0]  # the structural keys every member shares
        self.task = task
        self.run_dirs = run_dirs
        self.cache_dir = Path(cache_dir)
        self.noise, self.noise_scale = noise, noise_scale
        self.progress = progress
        self.download = download
        self._raw_data = data
        self.log = log or (lambda msg: None)
        self.suite = suite
        self.extra_loggers = list(loggers or [])
        self.diagnostics_enabled = diagnostics
        self.device = resolve_device(self.cfg.device)
        self.step = 0
        self._stop_requested = False
        self._acc: dict[str, torch.Tensor] = {}  # metrics [P] summed since the last log line (on the device)
        self._acc_n = 0
        self._segment_start = time.time()
        self.members: list[Member] = []

    @property
    def population(self) -> int:
        return len(self.cfgs)

    # -- a single run's view (member 0) ---------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.run_dirs[0]

    @property
    def evaluations(self) -> list[Evaluation]:
        return self.members[0].evaluations if self.members else []

    @property
    def diagnostics(self) -> list[dict[str, Any]]:
        return self.members[0].diagnostics if self.members else []

    def __getattr__(self, name: str) -> Any:
        # model, fit_report, pretrain_key, pretrain_cached, penalty, rule, ctx, model_buffer, generator: member 0's
        if name in _MEMBER_ATTRS and "members" in self.__dict__ and self.__dict__["members"]:
            return getattr(self.__dict__["members"][0], name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    @contextlib.contextmanager
    def own_rng(self, member: Member) -> Iterator[None]:
        """Run the body with ``member``'s own state of torch's global generators (CPU and CUDA), then keep what the
        body left for the member's next turn. Each run of a population has its own generators for everything the
        trainer draws; this covers what components draw from the global ones, so that member k of a population
        draws exactly what the single run of its seed draws. A single run goes through it too (one code path)."""
        outer = rng_states(self.device)
        set_rng_states(member.rng, self.device)
        try:
            yield
        finally:
            member.rng = rng_states(self.device)
            set_rng_states(outer, self.device)

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
        self.fingerprint = raw.fingerprint()
        self.spec: EnvSpec = self.task.spec()
        if raw.obs_dim != self.spec.obs_dim or raw.act_dim != self.spec.act_dim:
            raise ValueError(
                f"dataset of {self.task.name} has obs/act dims ({raw.obs_dim}, {raw.act_dim}) but its "
                f"evaluation env {self.task.env_id} has ({self.spec.obs_dim}, {self.spec.act_dim})"
            )
        self.normalizer = ObsNormalizer.from_data(raw, cfg.data.normalize_obs).to(self.device)
        self.data = self.normalizer.apply(raw.to(self.device))

        from zoo.dynamics.termination import get_termination

        self.termination = self.normalizer.wrap_termination(get_termination(self.task.termination))
        self.uses_model = cfg.rollout.horizon > 0 and cfg.batch.real_ratio < 1.0
        needs_model = self.uses_model or cfg.rule.name != "mle" or cfg.penalty.name != "none"
        self.members = []
        for k, (mcfg, run_dir) in enumerate(zip(self.cfgs, self.run_dirs, strict=True)):
            member = Member(
                k,
                mcfg,
                run_dir,
                generator=torch.Generator(device=self.device).manual_seed(mcfg.seed),
                learner_generator=torch.Generator(device=self.device).manual_seed(mcfg.seed + 1),
            )
            torch.manual_seed(mcfg.seed)
            member.rng = rng_states(self.device)
            if needs_model:
                with self.own_rng(member):
                    member.model, member.fit_report, member.pretrain_key, member.pretrain_cached = (
                        pretrained_dynamics(
                            mcfg.dynamics,
                            self.data,
                            self.spec,
                            self.device,
                            mcfg.seed,
                            mcfg.data.normalize_obs,
                            self.cache_dir,
                            progress=self.progress,
                        )
                    )
            self.members.append(member)
        self.learner = self._build_learner()
        total_epochs = max(1, math.ceil(cfg.steps / STEPS_PER_EPOCH))
        if hasattr(self.learner, "set_total_epochs"):
            self.learner.set_total_epochs(total_epochs)
        p = self.population
        if self.uses_model:
            self.buffers: PopulationBuffer | None = PopulationBuffer(
                p, buffer_capacity(cfg, STEPS_PER_EPOCH), self.spec.obs_dim, self.spec.act_dim, self.device
            )
        else:
            self.buffers = None
        for member in self.members:
            with self.own_rng(member):
                member.penalty = member.cfg.penalty.build()
                member.rule = member.cfg.rule.build()
            member.ctx = Context(
                data=self.data,
                model=member.model,
                learner=self.member_learner(member.k),
                termination=self.termination,
                normalizer=self.normalizer,
                device=self.device,
                generator=member.generator,
                step=0,
                spec=self.spec,
                extras={"config": member.cfg, "task": self.task},
            )
            member.model_buffer = self.buffers.members[member.k] if self.buffers is not None else None
        self._check_target_clamp()
        self.n_real = int(math.floor(cfg.batch.size * cfg.batch.real_ratio)) if self.uses_model else cfg.batch.size
        self.n_model = cfg.batch.size - self.n_real
        self.is_model = (
            torch.cat([torch.zeros(self.n_real, 1), torch.ones(self.n_model, 1)])
            .to(self.device)
            .unsqueeze(0)
            .expand(p, -1, -1)
        )
        reward_abs = float(self.data.reward.abs().max()) if len(self.data) else 1.0
        gamma = float(getattr(cfg.learner.cfg, "gamma", 0.99) or 0.99)
        self.q_limit = 100.0 * max(1.0, reward_abs) / max(1e-3, 1.0 - gamma)

    def _build_learner(self) -> Any:
        """The population's learner: one batched learner for every member when its class supports populations
        (initialised and driven by each member's learner generator), else a single run's learner (P = 1)."""
        from zoo.registry import REGISTRY

        cfg = self.cfg
        cls = REGISTRY.get("learner", cfg.learner.name)
        self.batched = bool(getattr(cls, "supports_population", False))
        if not self.batched:
            with self.own_rng(self.members[0]):
                torch.manual_seed(cfg.seed + 1)
                return cfg.learner.build(self.spec, self.device)
        return cls(
            cfg.learner.cfg,
            self.spec,
            self.device,
            members=[m.cfg.learner.cfg for m in self.members],
            generators=[m.learner_generator for m in self.members],
        )

    def member_learner(self, k: int) -> Any:
        """Run k's Learner protocol ([B, ·] shapes): what its rollouts, evaluations, rules and penalties see."""
        return self.learner.member(k) if self.batched else self.learner

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
    def rollout(self, k: int = 0) -> dict[str, float]:
        """One round of model rollouts of run k into its model buffer."""
        member = self.members[k]
        assert member.model_buffer is not None
        cfg = member.cfg.rollout
        gen = member.generator
        idx = torch.randint(len(self.data), (cfg.batch,), device=self.device, generator=gen)
        rollout_stage = getattr(member.penalty, "stage", "rollout") == "rollout"
        penalty = member.penalty if rollout_stage and member.cfg.penalty.name != "none" else None
        with self.own_rng(member):
            stats = self._rollout(member, idx, penalty)
        return stats.as_dict()

    def _rollout(self, member: Member, idx: torch.Tensor, penalty: Any) -> Any:
        gen, cfg = member.generator, member.cfg.rollout
        return model_rollout(
            member.model,
            self.member_learner(member.k),
            self.data.obs[idx],
            cfg.horizon,
            self.termination,
            member.model_buffer,
            penalty=penalty,
            ctx=member.ctx,
            generator=gen,
        )

    def draw_batch_pop(self) -> Batch:
        """Every run's mixed batch [P, B, ·]: real rows first, each run's indices from its own generator."""
        gens = [m.generator for m in self.members]
        n = len(self.data)
        real = [torch.randint(n, (self.n_real,), device=self.device, generator=g) for g in gens]
        real_idx = real[0].unsqueeze(0) if len(real) == 1 else torch.stack(real)
        d = self.data
        fields = {"obs": d.obs, "act": d.act, "reward": d.reward, "next_obs": d.next_obs, "terminal": d.terminal}
        if self.n_model == 0:
            return Batch(**{k: v[real_idx] for k, v in fields.items()}, is_model=self.is_model, n_real=self.n_real)
        assert self.buffers is not None
        m = self.buffers.sample(self.n_model, gens)
        return Batch(
            **{k: torch.cat([v[real_idx], m[k]], dim=1) for k, v in fields.items()},
            is_model=self.is_model,
            n_real=self.n_real,
        )

    def draw_batch(self) -> Batch:
        """A single run's batch [B, ·] (member 0 of the population's draw)."""
        return self.draw_batch_pop().member(0)

    def evaluate(self, k: int = 0) -> Evaluation:
        """Evaluate run k's deterministic policy (evaluation.md §3)."""
        from zoo.tasks.references import normalized_score

        member = self.members[k]
        index = len(member.evaluations)
        n = member.cfg.eval.episodes
        learner = self.member_learner(k)
        with self.own_rng(member):
            result = self._evaluate(member, learner, index, n)
        ev = Evaluation(
            step=self.step + 1,
            return_mean=result.return_mean,
            return_std=result.return_std,
            score=float(normalized_score(self.task, result.return_mean)),
            length_mean=float(result.lengths.mean()),
            returns=[float(r) for r in result.returns],
        )
        member.evaluations.append(ev)
        return ev

    def _evaluate(self, member: Member, learner: Any, index: int, n: int) -> EvalResult:
        return evaluate_policy(
            lambda obs: learner.act(obs, deterministic=True)[0],
            self.task.make_env,
            episodes=n,
            seeds=[eval_seed(member.cfg.seed, index, j) for j in range(n)],
            normalizer=self.normalizer,
            device=self.device,
            noise=self.noise,
            noise_scale=self.noise_scale,
            noise_seed=eval_seed(member.cfg.seed, index, 10_007),
        )

    # ------------------------------------------------------------------------------------------
    # Checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.members[0].checkpoint_path if self.members else self.run_dir / "checkpoints" / "last.pt"

    def save_checkpoint(self) -> None:
        """Every live run's checkpoint, in its own run directory, in the single-run format. A run whose metrics
        since the last log line are not finite keeps its previous checkpoint (the last good one): the divergence
        check of the next log line will stop it."""
        finite = None
        if self._acc:  # one host sync per checkpoint
            finite = torch.stack([torch.isfinite(v) for v in self._acc.values()]).all(0).tolist()
        for member in self.members:
            if member.alive and (finite is None or finite[member.k]):
                self._save_member(member)

    def _save_member(self, member: Member) -> None:
        k = member.k
        learner_state = self.learner.member_state_dict(k) if self.batched else self.learner.state_dict()
        state = {
            "step": self.step,
            "learner": learner_state,
            "model": member.model.state_dict() if member.model is not None else None,
            "rule": member.rule.state_dict(),
            "normalizer": self.normalizer.state_dict(),
            "evaluations": [e.__dict__ for e in member.evaluations],
            "generator": member.generator.get_state(),
            "learner_generator": member.learner_generator.get_state(),
            "rng": member.rng,  # its own state of the global generators of the CPU and of every CUDA device
            "device": str(self.device),
            "config_hash": member.cfg.hash(),
            "model_buffer": member.model_buffer.state_dict() if member.model_buffer is not None else None,
            "metrics_acc": ({key: v[k].cpu() for key, v in self._acc.items()}, self._acc_n),
            "wall_s": self.wall_s(k),
        }
        atomic_torch_save(state, member.checkpoint_path)

    def load_checkpoint(self) -> bool:
        """Restore every run from its checkpoint; False when none has one. All runs of a population must have
        one, written at the same step (a population checkpoints its runs together)."""
        paths = [m.checkpoint_path for m in self.members]
        present = [p.is_file() for p in paths]
        if not any(present):
            return False
        if not all(present):
            missing = [str(p) for p, ok in zip(paths, present, strict=True) if not ok]
            raise RuntimeError(
                f"cannot resume this population: {', '.join(missing)} missing. Resume its runs separately "
                "(--population 1) or delete the other checkpoints to start afresh"
            )
        states = [torch.load(p, map_location=self.device, weights_only=False) for p in paths]
        for member, state in zip(self.members, states, strict=True):
            written_on = torch.device(state.get("device", "cpu"))
            if written_on.type != self.device.type:
                raise RuntimeError(
                    f"{member.checkpoint_path} was written on {written_on} but this run is on {self.device}: its "
                    f"random states and its numbers belong to {written_on.type}. Resume it with --device "
                    f"{written_on.type}, or delete the checkpoint to start afresh"
                )
            if state.get("config_hash") != member.cfg.hash():
                raise RuntimeError(
                    f"{member.checkpoint_path} was written by another configuration; refusing to resume it"
                )
        steps = {int(s["step"]) for s in states}
        if len(steps) != 1:
            raise RuntimeError(
                f"the checkpoints of this population stopped at different steps ({sorted(steps)}); resume its runs "
                "separately (--population 1)"
            )
        self.step = steps.pop()
        if self.batched:
            self.learner.load_member_states([s["learner"] for s in states])
        else:
            self.learner.load_state_dict(states[0]["learner"])
        accs = []
        for member, state in zip(self.members, states, strict=True):
            if member.model is not None and state["model"] is not None:
                member.model.load_state_dict(state["model"])
            member.rule.load_state_dict(state["rule"])
            member.evaluations = [Evaluation(**e) for e in state["evaluations"]]
            member.generator.set_state(state["generator"].cpu())
            if "learner_generator" in state:
                member.learner_generator.set_state(state["learner_generator"].cpu())
            member.buffer_restored = False
            if member.model_buffer is not None and state.get("model_buffer") is not None:
                member.model_buffer.load_state_dict(state["model_buffer"])
                member.buffer_restored = True
            member.wall_before = float(state.get("wall_s", 0.0))
            member.rng = state["rng"] if "rng" in state else {"cpu": state["torch_rng"]}
            accs.append(state.get("metrics_acc", ({}, 0)))
        self._acc_n = accs[0][1]
        keys = accs[0][0].keys()
        self._acc = {key: torch.stack([a[0][key] for a in accs]).to(self.device) for key in keys}
        return True

    def wall_s(self, k: int = 0) -> float:
        """Wall time of run k: earlier segments (from its checkpoint) plus this one. The runs of a population
        share this segment's wall time."""
        before = self.members[k].wall_before if self.members else 0.0
        return before + (time.time() - self._segment_start)

    # ------------------------------------------------------------------------------------------
    # The loop
    def _request_stop(self, signum: int, frame: Any) -> None:
        if self._stop_requested:  # a second Ctrl-C (or SIGTERM) stops at once
            raise KeyboardInterrupt
        self._stop_requested = True
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.log(f"[yellow]{what}: finishing this step and writing a checkpoint (press Ctrl-C again to abort)[/]")

    def train(self, resume: bool = False, metrics_file: Path | None = None) -> dict[str, Any]:
        """Run the loop of a single run to ``cfg.steps``; returns the summary that goes into result.json. A
        divergence raises :class:`DivergenceError` (after the run stopped)."""
        if self.population != 1:
            raise ValueError(f"a population of {self.population}: use train_members")
        outcome = self.train_members(resume=resume, metrics_files=[metrics_file] if metrics_file else None)[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def train_members(
        self, resume: bool = False, metrics_files: list[Path] | None = None
    ) -> list[dict[str, Any] | DivergenceError]:
        """Run the loop to ``cfg.steps``; per run, the summary that goes into its result.json, or the
        :class:`DivergenceError` that stopped it."""
        paths = metrics_files or [m.run_dir / "metrics.jsonl" for m in self.members]
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
        start_step = 0
        self._segment_start = time.time()
        if resume and self.load_checkpoint():
            start_step = self.step
            for member, path in zip(self.members, paths, strict=True):
                _truncate_metrics(path, start_step)
                member.diagnostics = _records_of_kind(path, "model")  # the plot keeps the points before the stop
            self.log(f"resuming at step {start_step}")
        else:
            for path in paths:
                if path.exists():
                    path.unlink()
        previous_handlers: dict[int, Any] = {}
        for signum in STOP_SIGNALS:
            try:
                previous_handlers[signum] = signal.signal(signum, self._request_stop)
            except ValueError:  # not the main thread (e.g. inside a worker): no handler
                break
        try:
            try:
                for member, path in zip(self.members, paths, strict=True):
                    mcfg = member.cfg
                    run = RunInfo(
                        member.run_dir, self.suite, self.task.name, mcfg.algo, mcfg.hash(), mcfg.seed,
                        mcfg.tree(), start_step, path,
                    )
                    member.logs = LoggerSet.build(logger_names(mcfg.loggers, self.extra_loggers), run)
                for member in self.members:
                    self._start_member(member, start_step)
                self._loop(start_step)
            finally:
                for member in self.members:
                    if member.logs is not None:
                        member.logs.close()
                    self._plot_diagnostics(member)
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
        return [m.error if m.error is not None else self.summary(m.k) for m in self.members]

    def _start_member(self, member: Member, start_step: int) -> None:
        if member.model is not None and self.diagnostics_enabled and member.cfg.diagnostics:
            fit_extra = (member.fit_report.extra or {}) if member.fit_report is not None else {}
            member.diagnose = ModelDiagnostics.prepare(
                self.data, member.cfg.seed, fit_extra.get("holdout_rows"),
                with_penalty=member.cfg.penalty.name != "none",
            )
        if start_step == 0:
            with self.own_rng(member):
                info = member.rule.before_training(member.ctx) or {}
            if member.fit_report is not None:
                info = {
                    "pretrain/epochs": member.fit_report.epochs,
                    "pretrain/holdout_loss": member.fit_report.holdout_loss,
                    "pretrain/cached": bool(member.pretrain_cached),
                    **info,
                }
            self._record(member, {"step": 0, "kind": "setup", "population": self.population, **info})
            self.diagnose(0, member)
        elif self.uses_model and not member.buffer_restored and start_step % member.cfg.rollout.every:
            # A checkpoint without the model buffer (older versions): refill it with one fresh round,
            # unless the loop is about to roll out at this very step anyway.
            member.ctx.step = start_step
            self._record(member, {"step": start_step, "kind": "rollout", **self.rollout(member.k)})

    def _record(self, member: Member, record: dict[str, Any]) -> None:
        """One metrics record to every logger of the run (metrics.jsonl always)."""
        assert member.logs is not None
        member.logs.log(_floats(record))

    def diagnose(self, step: int, member: Member | None = None) -> dict[str, float]:
        """The model diagnostics (zoo.engine.diagnostics) of a run at this step, logged as a ``model`` record."""
        member = member or self.members[0]
        if member.diagnose is None or member.model is None:
            return {}
        with self.own_rng(member):
            values = member.diagnose.measure(member.model, member.penalty, member.ctx)
        record = {"step": step, "kind": "model", **values}
        member.diagnostics.append(record)
        self._record(member, record)
        return values

    def _plot_diagnostics(self, member: Member) -> None:
        """model_diagnostics.png in the run directory; a failing plot never fails the run."""
        if not member.diagnostics:
            return
        try:
            plot_diagnostics(member.diagnostics, member.run_dir / "model_diagnostics.png")
        except Exception as err:  # noqa: BLE001 (matplotlib failures are many and never the run's fault)
            self.log(f"[yellow]warning:[/] model diagnostics plot not written: {type(err).__name__}: {err}")

    def _target_penalties(self) -> Any:
        """The target-stage penalty of every run as ``(batch, learner) -> [B, 1]`` (a list for a batched learner,
        one callable for a single-run learner), or None."""
        if getattr(self.members[0].penalty, "stage", "rollout") != "target":
            return None

        def bind(member: Member) -> Callable[[Batch, Any], torch.Tensor]:
            penalty, ctx = member.penalty, member.ctx

            def target_penalty(batch: Batch, learner: Any) -> torch.Tensor:
                with self.own_rng(member):
                    return penalty(batch, learner, ctx)

            return target_penalty

        penalties = [bind(m) for m in self.members]
        return penalties if self.batched else penalties[0]

    def _learner_step(self, target_penalty: Any) -> dict[str, torch.Tensor]:
        """Draw every run's batch, apply the rules' ``on_batch``, update; metrics [P]."""
        batch = self.draw_batch_pop()
        if self.batched:
            if type(self.members[0].rule).on_batch is not Rule.on_batch:
                batch = Batch.stack([self._on_batch(m, batch.member(m.k)) for m in self.members])
            return self.learner.update_pop(batch, target_penalty=target_penalty)
        single = self._on_batch(self.members[0], batch.member(0))
        return {k: v.unsqueeze(0) for k, v in self.learner.update(single, target_penalty=target_penalty).items()}

    def _on_batch(self, member: Member, batch: Batch) -> Batch:
        if type(member.rule).on_batch is Rule.on_batch:
            return batch
        with self.own_rng(member):
            return member.rule.on_batch(batch, member.ctx)

    def _loop(self, start_step: int) -> None:
        cfg = self.cfg
        target_penalty = self._target_penalties()
        seeds = ",".join(str(m.cfg.seed) for m in self.members)
        label = f"{cfg.algo} {self.task.name}" + (f" seeds {seeds}" if self.population > 1 else "")
        progress = _Progress(cfg.steps, start_step, enabled=self.progress, label=label, plain=_plain_output())
        tick = time.time()
        with progress:
            for t in range(start_step, cfg.steps):
                self.step = t
                live = [m for m in self.members if m.alive]
                for member in live:
                    member.ctx.step = t
                    if self.uses_model and t % member.cfg.rollout.every == 0:
                        self._record(member, {"step": t, "kind": "rollout", **self.rollout(member.k)})
                metrics = self._learner_step(target_penalty)
                acc = self._acc
                for key, v in metrics.items():
                    acc[key] = acc[key] + v.detach() if key in acc else v.detach().clone()
                self._acc_n += 1
                for member in live:
                    if member.rule.every and (t + 1) % member.rule.every == 0:
                        with self.own_rng(member):
                            rule_metrics = member.rule.update(member.ctx) or {}
                        self._record(member, {"step": t + 1, "kind": "rule", **_floats(rule_metrics)})
                        self.diagnose(t + 1, member)
                if (t + 1) % STEPS_PER_EPOCH == 0 and hasattr(self.learner, "epoch_end"):
                    self.learner.epoch_end()
                last = t + 1 == cfg.steps
                if (t + 1) % cfg.log_every == 0 or last:
                    self._log_train(t + 1, tick, progress)
                    tick = time.time()
                live = [m for m in self.members if m.alive]
                if cfg.eval.episodes > 0 and ((t + 1) % cfg.eval.every == 0 or last):
                    for member in live:
                        ev = self.evaluate(member.k)
                        self._record(
                            member,
                            {
                                "step": t + 1,
                                "kind": "eval",
                                "return_mean": ev.return_mean,
                                "return_std": ev.return_std,
                                "score": ev.score,
                                "length_mean": ev.length_mean,
                            },
                        )
                    if live:
                        scores = [m.evaluations[-1].score for m in live]
                        returns = [m.evaluations[-1].return_mean for m in live]
                        progress.evaluated(t + 1, float(np.mean(scores)), float(np.mean(returns)))
                progress.advance(t + 1)
                self.step = t + 1
                if (cfg.checkpoint_every and (t + 1) % cfg.checkpoint_every == 0) or last:
                    self.save_checkpoint()
                if self._stop_requested:
                    self.save_checkpoint()
                    raise TrainingInterrupted(f"stopped at step {t + 1}; continue with --resume")
                if not live:
                    break  # every run has diverged

    def _log_train(self, step: int, tick: float, progress: _Progress) -> None:
        """Read the accumulated metrics (the host sync), check every live run for divergence, write its line."""
        keys = list(self._acc)
        table = torch.stack([self._acc[k] for k in keys]).cpu().tolist() if keys else []  # [K][P]
        n = max(self._acc_n, 1)
        sps = self._acc_n / max(time.time() - tick, 1e-9)
        self._acc, self._acc_n = {}, 0
        for member in self.members:
            if not member.alive:
                continue
            values = {key: row[member.k] / n for key, row in zip(keys, table, strict=True)}
            values["sps"] = sps
            error = self._divergence(values, step, member)
            self._record(member, {"step": step, "kind": "train", **values})
            if error is not None:
                member.error, member.stopped_at = error, step
                self.log(f"[yellow]{member.run_dir}: {error}[/]")
            if member.k == 0 or progress.losses == {}:
                progress.losses = values

    def _divergence(self, values: dict[str, float], step: int, member: Member) -> DivergenceError | None:
        """Q estimates, or the TD error (sqrt of the critic loss), beyond 100x any plausible return."""
        bad = [k for k, v in values.items() if not math.isfinite(v)]
        q_abs = max(abs(values.get("q_max", 0.0)), abs(values.get("q_mean", 0.0)))
        td = math.sqrt(max(values.get("critic_loss", 0.0), 0.0)) if not bad else 0.0
        if bad or max(q_abs, td) > self.q_limit:
            what = (
                f"non-finite {', '.join(bad)}"
                if bad
                else f"|Q| = {q_abs:.3g}, TD error = {td:.3g} (limit {self.q_limit:.3g})"
            )
            return DivergenceError(
                f"training diverged by step {step}: {what}. The last good checkpoint "
                f"({member.checkpoint_path}) is kept; lower the learning rates or the rollout horizon."
            )
        return None

    # ------------------------------------------------------------------------------------------
    def summary(self, k: int = 0, wall_s: float | None = None) -> dict[str, Any]:
        """Run k's summary for its result.json."""
        member = self.members[k]
        n = max(1, member.cfg.eval.last_k)
        last = member.evaluations[-n:]
        best = max(member.evaluations, key=lambda e: e.score) if member.evaluations else None
        return {
            "score": float(np.mean([e.score for e in last])) if last else None,
            "return": float(np.mean([e.return_mean for e in last])) if last else None,
            "score_evals": len(last),
            "best": {"score": best.score, "step": best.step, "note": "best single evaluation; never in tables"}
            if best
            else None,
            "steps": member.stopped_at if member.stopped_at is not None else self.step,
            "wall_s": self.wall_s(k) if wall_s is None else wall_s,
            "evaluations": len(member.evaluations),
            "pretrain_key": member.pretrain_key,
            "pretrain_cached": member.pretrain_cached,
            "dataset_fingerprint": self.fingerprint,
            "device": str(self.device),
            "device_kind": self.device.type,
            "population": self.population,
        }


_MEMBER_ATTRS = frozenset(
    {"model", "fit_report", "pretrain_key", "pretrain_cached", "penalty", "rule", "ctx", "model_buffer", "generator"}
)

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
