"""The live view of a sweep (issue 5, item 4): runs done / running / failed, per-run progress, ETA.

On a terminal it is a rich ``Live`` display refreshed twice a second; per-run progress is read from the tail of
each running run's ``metrics.jsonl`` (written every ``log_every`` steps), so it works with any executor whose
workers share the results directory. Elsewhere (CI logs, pipes, a file) it prints one flushed line per event
instead: every run started, finished or failed, each with the overall counts and the ETA (issue 12, item 1).
Event lines carry rich markup for their colours; every user-given piece (sweep labels such as
``mopo[penalty.coef=2.0]``, task names, error messages) is escaped so that it prints verbatim.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from zoo.bench.store import last_progress


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _name(spec: Any) -> str:
    """``label task seed N`` of a run, escaped for rich markup."""
    return escape(f"{spec.label} {spec.task} seed {spec.seed}")


class SweepView:
    """Receives the scheduler's events; renders them live on a terminal, as lines otherwise."""

    def __init__(self, console: Console | None = None, live: bool | None = None, poll_every: float = 1.0) -> None:
        self.console = console or Console()
        self.live_enabled = self.console.is_terminal if live is None else live
        self.poll_every = poll_every
        self._live: Live | None = None
        self.running: dict[str, dict[str, Any]] = {}
        self.total = self.done_before = self.done = self.failed = self.interrupted = 0
        self.pretrain_total = self.pretrain_finished = 0
        self.steps_total = self.steps_done = 0
        self.start_time = time.time()
        self._last_poll = 0.0
        self.header = ""
        self.recent: list[str] = []

    # -- scheduler events ----------------------------------------------------------------------
    def start(
        self, plan: Any, state: Any, pretrain_jobs: list[Any], executor: Any, groups: list[Any] | None = None
    ) -> None:
        self.start_time = time.time()
        self.total = len(plan.runs)
        self.done_before = len(state.done)
        self.failed = len(state.failed)
        self.pretrain_total = len(pretrain_jobs)
        self.steps_total = sum(spec.cfg.steps for spec in state.todo)
        self.header = (
            f"zoo bench: {self.total} runs ({', '.join(plan.suites)} × {len(plan.algos)} algos × "
            f"{len(plan.seeds)} seeds); {self.done_before} finished before, {len(state.failed)} failed before, "
            f"{len(state.todo)} to run, {self.pretrain_total} ensembles to pretrain · {executor.describe()}"
        )
        populations = [g for g in groups or [] if g.size > 1]
        if populations:
            self.header += (
                f" · {len(groups or [])} train jobs, {sum(g.size for g in populations)} runs in "
                f"{len(populations)} populations"
            )
        if self.live_enabled:
            self._live = Live(self.render(), console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        else:
            self.console.print(Text(self.header), soft_wrap=True)

    def job_started(self, job: Any) -> None:
        now = time.time()
        if job.kind == "run":  # one entry per run, a population's included: each finishes or fails alone
            for spec in job.specs:
                self.running[spec.id] = {
                    "kind": "run", "started": now, "step": 0, "score": None, "spec": spec, "total": spec.cfg.steps
                }
            if self._live is None:
                name = _name(job.spec) if len(job.specs) == 1 else escape(job.group.describe())
                self._event(f"[cyan]started[/] {name}")
        else:
            self.running[job.id] = {
                "kind": job.kind, "started": now, "step": 0, "score": None, "total": 0, "label": job.pretrain.label
            }
        self._refresh()

    def pretrain_done(self, job: Any, value: dict[str, Any]) -> None:
        self.running.pop(job.id, None)
        self.pretrain_finished += 1
        how = "loaded from the cache" if value.get("cached") else f"trained in {value.get('wall_s', 0):.0f}s"
        self._event(f"[green]pretrained[/] {escape(job.pretrain.label)}: {how}")

    def pretrain_failed(self, job: Any, message: str) -> None:
        self.running.pop(job.id, None)
        self.pretrain_finished += 1
        self._event(f"[red]pretraining failed[/] {escape(job.pretrain.label)}: {escape(message)}")

    def run_done(self, spec: Any, result: dict[str, Any]) -> None:
        entry = self.running.pop(spec.id, None)
        self.done += 1
        self.steps_done += spec.cfg.steps
        wall = time.time() - entry["started"] if entry else result.get("wall_s", 0.0)
        score = result.get("score")
        score_text = f"score {score:.1f}" if isinstance(score, float) else ""
        self._event(f"[green]done[/] {_name(spec)}: {score_text} ({wall:.0f}s)")

    def run_failed(self, spec: Any, message: str) -> None:
        entry = self.running.pop(spec.id, None)
        self.failed += 1
        if entry:
            self.steps_done += spec.cfg.steps
        self._event(f"[red]failed[/] {_name(spec)}: {escape(message.splitlines()[0][:200])}")

    def run_interrupted(self, spec: Any) -> None:
        self.running.pop(spec.id, None)
        self.interrupted += 1
        self._event(f"[yellow]stopped[/] {_name(spec)} (checkpointed; resumes next time)")

    def interrupting(self, running: int) -> None:
        self._event(
            f"[yellow]Ctrl-C: asking {running} running job(s) to checkpoint and stop (press again to stop at once)[/]"
        )

    def poll(self, out: Path) -> None:
        now = time.time()
        if now - self._last_poll < self.poll_every:
            return
        self._last_poll = now
        for entry in self.running.values():
            if entry["kind"] == "run":
                step, score = last_progress(entry["spec"].run_dir(out))
                entry["step"], entry["score"] = step, score if score is not None else entry["score"]
        self._refresh()

    def stop(self, report: Any) -> None:
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(None, None, None)
            self._live = None
        self.console.print(
            f"{len(report.finished)} run(s) trained, {len(report.skipped)} already finished, "
            f"{len(report.failed)} failed, {self.interrupted} stopped, in {_duration(report.wall_s)}",
            highlight=False,
        )

    # -- rendering ----------------------------------------------------------------------------
    def eta(self) -> float | None:
        partial = sum(min(e["step"], e["total"]) for e in self.running.values() if e["kind"] == "run")
        fraction = (self.steps_done + partial) / self.steps_total if self.steps_total else 0.0
        if fraction < 0.02:
            return None
        elapsed = time.time() - self.start_time
        return elapsed * (1.0 - fraction) / fraction

    def render(self) -> Group:
        finished = self.done_before + self.done
        eta = self.eta()
        running = sum(e["kind"] == "run" for e in self.running.values())
        summary = Text.from_markup(
            f"[bold]{finished}/{self.total}[/] runs done · [cyan]{running}[/] running · [red]{self.failed}[/] "
            f"failed · pretrained {self.pretrain_finished}/{self.pretrain_total} · "
            f"elapsed {_duration(time.time() - self.start_time)} · ETA {_duration(eta) if eta is not None else '-'}"
        )
        bar = Table.grid(padding=(0, 1))
        bar.add_row(
            ProgressBar(total=max(1, self.total), completed=finished + self.failed, width=60),
            Text(f"{finished + self.failed}/{self.total}", style="dim"),
        )
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        table.add_column("running", no_wrap=True, overflow="ellipsis", ratio=1)
        table.add_column("progress", width=22, no_wrap=True)
        table.add_column("step", justify="right")
        table.add_column("score", justify="right")
        table.add_column("time", justify="right")
        for _, e in sorted(self.running.items(), key=lambda kv: kv[1]["started"]):
            elapsed = _duration(time.time() - e["started"])
            if e["kind"] == "run":
                spec = e["spec"]
                name = f"{spec.label} · {spec.task} · seed {spec.seed}"
                progress = ProgressBar(total=max(1, e["total"]), completed=min(e["step"], e["total"]), width=20)
                score = "-" if e["score"] is None else f"{e['score']:.1f}"
                table.add_row(Text(name), progress, f"{e['step']}/{e['total']}", score, elapsed)
            else:
                table.add_row(Text(e["label"]), Text("pretraining", style="magenta"), "", "", elapsed)
        parts: list[Any] = [Text(self.header, style="dim"), summary, bar]
        if self.running:
            parts.append(table)
        parts.extend(Text.from_markup(line) for line in self.recent[-5:])
        return Group(*parts)

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render())

    def counts(self) -> str:
        """Overall state in one line: finished/total, running, failed, elapsed and ETA."""
        eta = self.eta()
        running = sum(e["kind"] == "run" for e in self.running.values())
        return (
            f"{self.done_before + self.done}/{self.total} done, {running} running, {self.failed} failed, "
            f"elapsed {_duration(time.time() - self.start_time)}, ETA {_duration(eta) if eta is not None else '-'}"
        )

    def _event(self, line: str) -> None:
        if self._live is not None:
            self.recent.append(line)
            self._refresh()
        else:
            # soft_wrap: one event, one line, whatever the console's width (a log file has none)
            self.console.print(f"{line} [dim]· {escape(self.counts())}[/]", highlight=False, soft_wrap=True)
            self.console.file.flush()
