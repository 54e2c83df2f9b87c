"""The CUDA path's audit findings (issue 13), each checked where the CPU can show it.

Workers see one GPU of the listed ones; the device kind is part of every identity (config hash, pretraining key,
result and environment records); a checkpoint does not move between device kinds; TF32 is off for a run; ROMI's
Adam keeps its step counters on the device; ROMBRL's CG/GMRES read nothing back per iteration and give the results
of the host-read loops they replace; timers wait on the run's own GPU; Ray without GPUs runs under a CPU hash.
"""

from __future__ import annotations

import json
import math
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.fixtures import HopperShapedTask, hopper_shaped_rows
from tests.test_host_sync import host_syncs_raise
from zoo.bench import executors
from zoo.bench.executors import LocalExecutor, default_workers, run_gpu_memory_gb, worker_gpu
from zoo.bench.jobs import WorkerEnv, worker_info
from zoo.config import RunConfig, resolve
from zoo.device import device_adam, device_kind
from zoo.engine.pretrain import pretrain_key
from zoo.engine.run import resolve_run
from zoo.engine.trainer import Trainer
from zoo.rules.rombrl_linalg import CGInfo, conjugate_gradient, gmres

D64 = torch.float64


# -- 1. workers and GPUs ----------------------------------------------------------------------------------------
def test_workers_take_turns_over_the_listed_gpus_and_a_pinned_gpu_is_left_to_all() -> None:
    listed = ["3", "5"]  # CUDA_VISIBLE_DEVICES=3,5 as SLURM sets it
    assert [worker_gpu(k, listed, "cuda") for k in range(4)] == ["3", "5", "3", "5"]
    assert worker_gpu(1, listed, None) == "5"
    assert worker_gpu(1, listed, "cuda:1") is None  # every worker must see GPU 1 under its own index
    assert worker_gpu(0, listed, "cpu") is None and worker_gpu(0, [], "cuda") is None


@pytest.mark.slow  # a spawned worker: about 10 s
def test_a_local_worker_sees_one_of_the_gpus_its_driver_sees(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setattr(executors, "cuda_device_count", lambda: 2)  # the driver's view; the worker only reads env
    ex = LocalExecutor(LocalExecutor.Config(workers=1, threads=1))
    assert ex.gpu_names == ["3", "5"] and ex.run_device(None) == "cuda" and ex.run_device("cuda:1") == "cuda:1"
    ex.start(WorkerEnv(device="cuda"))
    try:
        info = ex.submit(worker_info).result(timeout=120)
    finally:
        ex.shutdown()
    assert info["env"]["CUDA_VISIBLE_DEVICES"] == "3"


def test_runs_per_gpu_follow_its_free_memory_and_the_recipes_buffer() -> None:
    mopo, rambo = resolve("mopo"), resolve("rambo")
    small, large = run_gpu_memory_gb(mopo, 11, 3), run_gpu_memory_gb(rambo, 11, 3)
    capacity = {  # the trainer's rule: retain x rounds per epoch x batch x horizon rows
        name: cfg.rollout.retain * math.ceil(1000 / cfg.rollout.every) * cfg.rollout.batch * cfg.rollout.horizon
        for name, cfg in (("mopo", mopo), ("rambo", rambo))
    }
    assert capacity["rambo"] >= 4 * capacity["mopo"]
    row = (2 * 11 + 3 + 3) * 4
    extra_rollout = (rambo.rollout.batch - mopo.rollout.batch) * row * 4
    assert large - small == pytest.approx(((capacity["rambo"] - capacity["mopo"]) * row + extra_rollout) / 2**30)
    # 4 runs per GPU when memory holds them, fewer when it does not (at least one per GPU), one per core at most
    assert default_workers(cores=64, gpus=2, memory_gb=1e6, gpu_free_gb=[80.0, 80.0], gpu_gb_per_run=large) == 8
    per_gpu = int(0.9 * 6.0 // large)
    assert default_workers(cores=64, gpus=2, memory_gb=1e6, gpu_free_gb=[6.0, 1.0], gpu_gb_per_run=large) == (
        max(1, min(4, per_gpu)) + 1
    )
    assert default_workers(cores=3, gpus=2, memory_gb=1e6, gpu_free_gb=[80.0, 80.0], gpu_gb_per_run=large) == 3


# -- 2, 6, 10. the device in every identity --------------------------------------------------------------------
def test_config_hash_names_the_device_kind_not_its_index() -> None:
    hashes = {name: RunConfig(device=name).hash() for name in ("cpu", "cuda", "cuda:0", "cuda:1")}
    assert hashes["cpu"] != hashes["cuda"]
    assert hashes["cuda"] == hashes["cuda:0"] == hashes["cuda:1"]
    assert RunConfig(device="auto").hash() == hashes[device_kind("auto")]


def test_a_resolved_run_names_the_device_it_gets(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = resolve_run("mopo", "hopper-medium-v2", 0)
    assert cfg.device == device_kind("auto") and f'device = "{device_kind("auto")}"' in cfg.to_toml()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a driver on a GPU machine
    assert resolve_run("mopo", "hopper-medium-v2", 0).device == "cuda"


def test_pretraining_cache_key_names_the_device() -> None:
    dynamics = resolve("mopo").dynamics
    keys = {kind: pretrain_key("abc", dynamics, False, 0, kind) for kind in ("cpu", "cuda")}
    assert keys["cpu"] != keys["cuda"]


def test_ray_without_gpus_runs_under_a_cpu_hash_on_a_gpu_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    from zoo.bench.executors import RayExecutor
    from zoo.bench.sweep import run_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the driver sees a GPU
    import ray

    ray_was_up = ray.is_initialized()
    ray_ex = RayExecutor(RayExecutor.Config(gpus_per_run=0))  # gpus_per_run given: no Ray is started
    device = run_device(ray_ex, None)
    assert device == "cpu"
    cfg = resolve_run("mopo", "hopper-medium-v2", 0, device=device)
    assert cfg.hash() == RunConfig(**{**cfg.__dict__, "device": "cpu"}).hash()
    assert cfg.hash() != resolve_run("mopo", "hopper-medium-v2", 0).hash()  # what auto gives on this driver
    with pytest.raises(ValueError, match="gpus_per_run"):
        run_device(ray_ex, "cuda")
    ray_ex = RayExecutor(RayExecutor.Config(gpus_per_run=0.25))
    assert run_device(ray_ex, None) == "cuda" and run_device(ray_ex, "cuda:1") == "cuda"
    assert ray.is_initialized() == ray_was_up


def tiny_run(device: str, steps: int, checkpoint_every: int) -> list[str]:
    """A small SAC run with a tiny one-epoch model and one-step rollouts (the checkpoint keeps the model buffer,
    so a resume must be exact)."""
    return [f"steps={steps}", f"log_every={checkpoint_every}", f"checkpoint_every={checkpoint_every}",
            "eval.episodes=0", f'device="{device}"', "rollout.horizon=1", "rollout.batch=32", "batch.real_ratio=0.5",
            "dynamics.max_epochs=1", "dynamics.hidden=[16, 16]", "dynamics.weight_decay=[0.0, 0.0, 0.0]",
            'penalty.name="none"', 'rule.name="mle"',
            "learner.hidden=[32, 32]", "batch.size=64"]


def resumed_equals_uninterrupted(
    device: str, tmp: Path, steps: int = 40, stop_at: int = 20, resume_on: str | None = None
) -> float:
    """Largest |difference| of the learner's state between a run stopped by a SIGINT during step ``stop_at`` (the
    Ctrl-C path: the handler's stop request, a checkpoint, TrainingInterrupted) and resumed (on ``resume_on``), and
    the same run uninterrupted. 0.0 when exact. Call it from the main thread (the handler needs it)."""
    from zoo.engine.trainer import TrainingInterrupted

    def trainer(name: str, on: str = device) -> Trainer:
        cfg = resolve("mopo", overrides=tiny_run(on, steps, stop_at))
        torch.manual_seed(0)
        t = Trainer(cfg, HopperShapedTask(), tmp / name, tmp / "cache", progress=False, data=hopper_shaped_rows(500))
        t.setup()
        return t

    straight = trainer("straight")
    straight.train()
    stopped = trainer("stopped")
    update = stopped.learner.update_pop  # SAC trains a run as a population of one

    def update_then_stop(*args: Any, **kwargs: Any) -> Any:
        out = update(*args, **kwargs)
        if stopped.step + 1 == stop_at:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C: the trainer's handler asks for a stop after this step
        return out

    stopped.learner.update_pop = update_then_stop  # type: ignore[method-assign]
    try:
        stopped.train()
        raise AssertionError("the stop request did not stop the run")
    except TrainingInterrupted:
        pass
    torch.manual_seed(123)  # a different global state in between, as a new process would have
    if torch.device(device).type == "cuda":
        torch.cuda.manual_seed_all(123)
    resumed = trainer("stopped", resume_on or device)
    resumed.train(resume=True)
    a, b = straight.learner.state_dict(), resumed.learner.state_dict()
    worst = 0.0
    for key, value in a.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            worst = max(worst, float((value - b[key].to(value.device)).abs().max()))
    return worst


def test_cpu_and_gpu_runs_never_share_a_leaderboard_table(tmp_path: Path) -> None:
    from tests.runs_tree import make_run
    from zoo.bench.grid import Setting
    from zoo.bench.leaderboard.model import build_leaderboards
    from zoo.results import load_runs

    for seed, (cpu_score, gpu_score) in enumerate([(10.0, 30.0), (20.0, 50.0)]):
        make_run(tmp_path, "quick", "pendulum-random", "mopo", seed, cpu_score, config_hash="cccccccccccc")
        gpu = make_run(tmp_path, "quick", "pendulum-random", "mopo", seed, gpu_score, config_hash="dddddddddddd")
        result = json.loads((gpu / "result.json").read_text())
        (gpu / "result.json").write_text(json.dumps({**result, "device": "cuda:0", "device_kind": "cuda"}))
    boards = {b.setting: b for b in build_leaderboards(load_runs(tmp_path), reps=100, with_curves=False)}
    assert set(boards) == {Setting("quick"), Setting("quick", device="cuda")}
    assert boards[Setting("quick")].cells[("pendulum-random", "mopo")].mean == 15.0
    assert boards[Setting("quick", device="cuda")].cells[("pendulum-random", "mopo")].mean == 40.0
    assert boards[Setting("quick", device="cuda")].slug == "quick-cuda" and boards[Setting("quick")].slug == "quick"
    assert Setting("quick").key() == json.dumps({"preset": "quick", "set": []}, sort_keys=True)  # as before


# -- 2, 3, 7. checkpoints across devices; TF32 --------------------------------------------------------------------
def _trainer(tmp_path: Path) -> Trainer:
    torch.manual_seed(0)
    trainer = Trainer(
        resolve("mopo", overrides=tiny_run("cpu", steps=4, checkpoint_every=2)), HopperShapedTask(),
        tmp_path / "run", tmp_path / "cache", progress=False, data=hopper_shaped_rows(500),
    )
    trainer.setup()
    return trainer


def test_tf32_is_off_for_a_run_and_the_device_is_recorded(tmp_path: Path) -> None:
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    try:
        torch.backends.cuda.matmul.allow_tf32 = True  # what an environment override or a plugin may set
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("medium")
        trainer = _trainer(tmp_path)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
        assert torch.get_float32_matmul_precision() == "highest"
        assert trainer.numerics["cuda_matmul_allow_tf32"] is False
        assert trainer.numerics["float32_matmul_precision"] == "highest"
        summary = trainer.train()
        assert summary["device"] == "cpu" and summary["device_kind"] == "cpu"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def test_a_checkpoint_holds_its_device_and_every_generator_and_does_not_move_device_kind(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    trainer.train()
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    state = torch.load(path, weights_only=False)
    assert state["device"] == "cpu"
    # the run's own state of the global CPU stream as the run left it (zoo.engine.trainer.Trainer.own_rng), and the
    # states of its two generators
    assert torch.equal(state["rng"]["cpu"], trainer.members[0].rng["cpu"])
    assert torch.equal(state["generator"], trainer.members[0].generator.get_state())
    assert torch.equal(state["learner_generator"], trainer.members[0].learner_generator.get_state())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        assert len(state["rng"]["cuda"]) == torch.cuda.device_count()
    state["device"] = "cuda:0"  # as a GPU run would have written it
    torch.save(state, path)
    with pytest.raises(RuntimeError, match=r"written on cuda:0 but this run is on cpu.*--device cuda"):
        _trainer(tmp_path).train(resume=True)


def test_the_learner_state_shows_a_resume_that_is_not_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison the CUDA resume check relies on sees a lost random stream (here: the learner's noise stream
    restarted from its seed instead of restored)."""
    load = torch.load

    def lose_the_learner_stream(*args: Any, **kwargs: Any) -> Any:
        state = load(*args, **kwargs)
        if isinstance(state, dict):
            state.pop("learner_generator", None)
        return state

    monkeypatch.setattr(torch, "load", lose_the_learner_stream)
    assert resumed_equals_uninterrupted("cpu", tmp_path, steps=8, stop_at=4) > 0.0


@pytest.mark.gpu
def test_a_cuda_run_stopped_and_resumed_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    """Values, not step counts: the SAC update draws its noise from the run's own CUDA generator."""
    assert resumed_equals_uninterrupted("cuda", tmp_path) == 0.0


@pytest.mark.gpu
def test_a_cuda_checkpoint_continues_exactly_on_another_gpu(tmp_path: Path) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    assert resumed_equals_uninterrupted("cuda:0", tmp_path, resume_on="cuda:1") == 0.0


@pytest.mark.gpu
def test_cuda_rollouts_run_in_chunks() -> None:
    """A gradient-free ensemble forward of 50,000 rows holds one chunk's activations, not 280 MB per layer."""
    from zoo.dynamics.ensemble import CUDA_INFERENCE_CHUNK, GaussianEnsemble
    from zoo.protocols import EnvSpec

    dev = torch.device("cuda")
    model = GaussianEnsemble(GaussianEnsemble.Config(), EnvSpec(11, 3), dev)
    x = torch.randn(50_000, 14, device=dev)
    torch.cuda.synchronize(dev)
    base = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    with torch.no_grad():
        mean, logvar = model.forward_scaled(x)
    torch.cuda.synchronize(dev)
    outputs = mean.numel() * 4 * 2 * 2  # the outputs and their concatenation
    per_layer_full = 7 * 50_000 * 200 * 4
    peak = torch.cuda.max_memory_allocated(dev) - base
    assert peak < outputs + 4 * 7 * CUDA_INFERENCE_CHUNK * 200 * 4 < per_layer_full + outputs, peak


# -- 4. ROMI's Adam -------------------------------------------------------------------------------------------
def test_romis_optimizers_never_read_their_step_counters_back() -> None:
    from tests.test_rule_romi import make_rule, tiny_ctx

    rule = make_rule(tiny_ctx())
    rule._setup(tiny_ctx())
    for opt in (rule.weight_optimizer, rule.model_optimizer):
        assert opt.defaults["fused"] or opt.defaults["capturable"]  # plain Adam calls .item() on a GPU counter
    cpu_params = [torch.nn.Parameter(torch.zeros(3))]
    opt = device_adam(cpu_params, 1e-3)
    cpu_params[0].grad = torch.ones(3)
    opt.step()
    state = opt.state[cpu_params[0]]["step"]
    assert state.device == cpu_params[0].device and float(state) == 1.0


# -- 5. CG and GMRES without per-iteration host reads ---------------------------------------------------------
def _host_cg(matvec: Callable, b: torch.Tensor, tol: float, max_iter: int) -> tuple[torch.Tensor, int, float]:
    """The loop these solvers replace (b32c5df), one host read per iteration: the reference of the new ones."""
    x, r = torch.zeros_like(b), b.clone()
    p, rs = r.clone(), torch.dot(r, r)
    b_norm = float(rs.sqrt())
    if b_norm == 0.0:
        return x, 0, 0.0
    it = 0
    for it in range(1, max_iter + 1):
        mp = matvec(p)
        curvature = torch.dot(p, mp)
        if not float(curvature) > 0.0:
            it -= 1
            break
        alpha = rs / curvature
        x, r = x + alpha * p, r - alpha * mp
        rs_new = torch.dot(r, r)
        if float(rs_new.sqrt()) <= tol * b_norm:
            rs = rs_new
            break
        p, rs = r + (rs_new / rs) * p, rs_new
    return x, it, float(rs.sqrt()) / b_norm


def _host_gmres(matvec: Callable, b: torch.Tensor, tol: float, max_iter: int, restart: int) -> tuple:
    """Restarted GMRES with Python-float Givens rotations (b32c5df): the reference of the masked one."""
    x, b_norm, total = torch.zeros_like(b), float(b.norm()), 0
    if b_norm == 0.0:
        return x, 0, 0.0
    while total < max_iter:
        r = b - matvec(x) if total else b.clone()
        beta = float(r.norm())
        if beta <= tol * b_norm:
            break
        basis, hess, cs, sn, g = [r / beta], [], [], [], [beta]
        for j in range(restart):
            w = matvec(basis[j])
            total += 1
            col = []
            for q in basis:
                hij = float(torch.dot(q, w))
                w = w - hij * q
                col.append(hij)
            h_next = float(w.norm())
            for i in range(j):
                col[i], col[i + 1] = cs[i] * col[i] + sn[i] * col[i + 1], -sn[i] * col[i] + cs[i] * col[i + 1]
            denom = math.hypot(col[j], h_next)
            c_j, s_j = (1.0, 0.0) if denom == 0.0 else (col[j] / denom, h_next / denom)
            col[j] = denom
            cs.append(c_j)
            sn.append(s_j)
            g.append(-s_j * g[j])
            g[j] = c_j * g[j]
            hess.append(col)
            if abs(g[j + 1]) <= tol * b_norm or total >= max_iter or h_next <= 1e-300:
                break
            basis.append(w / h_next)
        k = len(hess)
        R = torch.zeros(k, k, dtype=D64)
        for jj, col in enumerate(hess):
            R[: jj + 1, jj] = torch.tensor(col[: jj + 1], dtype=D64)
        y = torch.linalg.solve_triangular(R, torch.tensor(g[:k], dtype=D64).unsqueeze(1), upper=True)[:, 0]
        x = x + y.to(b.dtype) @ torch.stack(basis[:k])
        if abs(g[k]) <= tol * b_norm:
            break
    return x, total, float((b - matvec(x)).norm()) / b_norm


def _problems() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(13)
    R = torch.randn(30, 30, dtype=D64, generator=g)
    spd = R @ R.T / 30 + 0.1 * torch.eye(30, dtype=D64)
    few = torch.diag(torch.tensor([1.0, 2.0, 3.0, 5.0] * 5 + [1.0] * 10, dtype=D64))  # 4 distinct eigenvalues
    nonsym = 2.0 * torch.eye(30, dtype=D64) + (R + R.T) / 10 + 0.3 * torch.randn(30, 30, dtype=D64, generator=g)
    indefinite = (R + R.T) / 5
    b = torch.randn(30, dtype=D64, generator=g)
    return {"spd": (spd, b), "few": (few, b), "nonsym": (nonsym, b), "indefinite": (indefinite, b),
            "zero": (spd, torch.zeros(30, dtype=D64))}


@pytest.mark.parametrize("check_every", [1, 3, 1000])
def test_masked_cg_equals_the_host_read_loop(check_every: int) -> None:
    for name, (M, b) in _problems().items():
        if name == "nonsym":
            continue
        for tol, max_iter in ((1e-12, 200), (1e-3, 200), (1e-12, 5)):
            x_ref, it_ref, res_ref = _host_cg(lambda v, M=M: M @ v, b, tol, max_iter)
            x, info = conjugate_gradient(lambda v, M=M: M @ v, b, tol, max_iter, check_every=check_every)
            torch.testing.assert_close(x, x_ref, rtol=1e-12, atol=1e-14, msg=f"{name} tol={tol}")
            assert int(info.iterations) == it_ref, (name, tol, max_iter)
            assert float(info.residual) == pytest.approx(res_ref, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("check_every", [1, 4, 1000])
def test_masked_gmres_equals_the_host_read_loop(check_every: int) -> None:
    for name, (A, b) in _problems().items():
        for tol, max_iter, restart in ((1e-12, 40, 40), (1e-12, 40, 7), (1e-4, 40, 40), (1e-12, 9, 40)):
            x_ref, it_ref, res_ref = _host_gmres(lambda v, A=A: A @ v, b, tol, max_iter, restart)
            x, info = gmres(lambda v, A=A: A @ v, b, tol, max_iter, restart=restart, check_every=check_every)
            torch.testing.assert_close(x, x_ref, rtol=1e-9, atol=1e-12, msg=f"{name} {tol} {max_iter} {restart}")
            assert int(info.iterations) == it_ref, (name, tol, max_iter, restart)
            assert float(info.residual) == pytest.approx(res_ref, rel=1e-6, abs=1e-13)
    A, b = _problems()["nonsym"]
    x, _ = gmres(lambda v: A @ v, b, 1e-13, 100, restart=100, check_every=check_every)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-9, atol=1e-11)


def test_solvers_read_nothing_back_inside_one_restart_cycle() -> None:
    A, b = _problems()["nonsym"]
    S, _ = _problems()["spd"]
    with host_syncs_raise():
        x, info = gmres(lambda v: A @ v, b, 1e-12, 50, restart=50, check_every=50)
        y, cg_info = conjugate_gradient(lambda v: S @ v, b, 1e-12, 200, check_every=200)
    assert isinstance(info, CGInfo) and isinstance(info.iterations, torch.Tensor)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(y, torch.linalg.solve(S, b), rtol=1e-8, atol=1e-10)


# -- 9. timers wait on the run's own GPU -----------------------------------------------------------------------
def test_rombrl_timer_synchronises_the_runs_own_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoo.rules.rombrl import _Timer

    waited: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    _Timer(torch.device("cuda:1")).lap()
    _Timer(torch.device("cpu")).lap()
    assert waited == [torch.device("cuda:1")]
