"""Where a run computes, and what of that belongs to its identity and its checkpoint (issue 13).

- :func:`resolve_device` turns ``auto | cpu | cuda | cuda:N`` into a ``torch.device``; :func:`device_kind` gives
  the part of it that changes results (``cpu`` or ``cuda``, never the index: ``cuda:0`` and ``cuda:1`` compute
  the same numbers). The kind goes into the config hash, the pretraining cache key, ``result.json`` and
  ``environment.json``, so CPU and GPU runs never share a run directory, a cached model or a leaderboard cell.
- :func:`set_exact_numerics` turns TF32 off for the run (an environment override or a plugin that lowers float32
  matmul precision would otherwise run the Woodbury Gram sums of ROMBRL with 10-bit mantissas) and returns the
  settings recorded in ``environment.json``.
- :func:`rng_states` / :func:`set_rng_states`: the global generators of every device (the CPU one and each CUDA
  device's), which learners draw noise from, so a resumed run continues the same random streams.
- :func:`synchronize`: wait for this device's queue only (a bare ``torch.cuda.synchronize()`` waits on GPU 0).
"""

from __future__ import annotations

from typing import Any

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU; a CUDA request without CUDA fails."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use --device cpu or auto")
    return device


def device_kind(name: str | torch.device) -> str:
    """The device type that decides results: ``cpu`` or ``cuda`` (``auto`` as it resolves on this machine)."""
    if isinstance(name, torch.device):
        return name.type
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(name).type
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def set_exact_numerics() -> dict[str, Any]:
    """Full float32 matmuls and convolutions everywhere in this process (no TF32); returns what is set."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return numerics()


def numerics() -> dict[str, Any]:
    """The float32 precision settings of this process, as recorded in ``environment.json``."""
    return {
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
    }


def describe_device(device: torch.device) -> dict[str, Any]:
    """The device of a run for ``environment.json``: its name, its kind and, on CUDA, the GPU and its memory."""
    out: dict[str, Any] = {"device": str(device), "device_kind": device.type}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        out.update(
            {
                "gpu": props.name,
                "gpu_memory_gb": round(props.total_memory / 2**30, 2),
                "gpu_capability": f"{props.major}.{props.minor}",
                "cuda": torch.version.cuda,
            }
        )
    return out


def rng_states(device: torch.device | None = None) -> dict[str, Any]:
    """The global generator states of every device of this process: the CPU's and, when CUDA is up, each GPU's,
    plus (``run_device``) the state of the run's own GPU, which a resume on another GPU index continues from."""
    states: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if device is not None and device.type == "cuda":
        states["run_device"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore :func:`rng_states`: the CPU's, each saved GPU's that exists here (by index), then the run's own GPU
    stream onto ``device`` (which may have another index than the one that wrote it)."""
    torch.set_rng_state(states["cpu"].cpu())
    cuda_states = states.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        for index, state in enumerate(cuda_states[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state.cpu(), index)
    if device is not None and device.type == "cuda" and "run_device" in states:
        torch.cuda.set_rng_state(states["run_device"].cpu(), device)


def synchronize(device: torch.device | str) -> None:
    """Wait until this device has finished its queued work (no-op off CUDA)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_adam(params: Any, lr: float) -> torch.optim.Adam:
    """Adam whose step counters never come back to the host: the fused kernel where torch has one for these
    tensors (the counters stay on the parameters' device, also after a ``map_location`` resume), else the
    capturable foreach path on CUDA, plain foreach on the CPU. Plain Adam reads a counter that sits on a GPU
    with ``.item()`` once per parameter per step."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        on_cuda = any(p.device.type == "cuda" for p in params)
        return torch.optim.Adam(params, lr=lr, foreach=True, capturable=on_cuda)
