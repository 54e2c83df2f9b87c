"""Cached ensemble pretraining (DESIGN.md "The composition"; dynamics.md §13 "Caching").

A pretrained model is a pure function of (dataset fingerprint, the whole dynamics section including its
pretraining settings, ``data.normalize_obs``, seed, device kind). It is stored once under
``<cache>/dynamics/<key>/`` and every run that asks for the same key loads it, so recipes with equal
dynamics configs (``mopo`` and ``mbpo``) share one model per (task, seed). Concurrent runs asking for
the same key wait on a file lock instead of training it twice. Entries are written atomically, and
``meta.json`` (written after ``model.pt``) holds the sha256 of ``model.pt``: an entry whose file does not match
it, cannot be read, or lacks its ``meta.json`` (a crash between the two writes) is retrained, with a warning
naming its path, instead of breaking every run that needs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from zoo.config import Component
from zoo.data.transitions import Transitions
from zoo.io import atomic_torch_save, atomic_write_text
from zoo.protocols import EnvSpec, FitReport


def pretrain_key(fingerprint: str, dynamics: Component, normalize_obs: bool, seed: int, device_kind: str) -> str:
    """The cache key; ``device_kind`` (cpu | cuda) keeps a CPU-pretrained model from GPU runs and back."""
    blob = json.dumps(
        {
            "data": fingerprint,
            "dynamics": dynamics.as_dict(),
            "normalize_obs": normalize_obs,
            "seed": seed,
            "device": device_kind,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pretrained_dynamics(
    dynamics: Component,
    data: Transitions,
    spec: EnvSpec,
    device: torch.device,
    seed: int,
    normalize_obs: bool,
    cache_dir: Path,
    progress: bool = False,
) -> tuple[Any, FitReport, str, bool]:
    """(model, fit report, cache key, loaded_from_cache). ``data`` is in the model's space."""
    key = pretrain_key(data.fingerprint(), dynamics, normalize_obs, seed, torch.device(device).type)
    entry = cache_dir / "dynamics" / key
    with file_lock(cache_dir / "dynamics" / f"{key}.lock"):
        torch.manual_seed(seed)
        model = dynamics.build(spec, device)
        if (entry / "model.pt").is_file():
            state = _load_verified(entry, device)
            if state is not None:
                model.load_state_dict(state["model"])
                return model, FitReport(**state["report"]), key, True
            torch.manual_seed(seed)
            model = dynamics.build(spec, device)  # the same initial weights as a first training
        generator = torch.Generator(device=device).manual_seed(seed)
        start = time.time()
        report = model.fit(data, generator=generator, progress=progress)
        report.extra["wall_s"] = time.time() - start
        atomic_torch_save(
            {"model": {k: v.cpu() for k, v in model.state_dict().items()}, "report": report.__dict__},
            entry / "model.pt",
        )
        atomic_write_text(
            entry / "meta.json",
            json.dumps(
                {
                    "key": key,
                    "sha256": file_sha256(entry / "model.pt"),
                    "dataset_fingerprint": data.fingerprint(),
                    "dynamics": dynamics.as_dict(),
                    "normalize_obs": normalize_obs,
                    "seed": seed,
                    "device": str(device),
                    "epochs": report.epochs,
                    "holdout_loss": report.holdout_loss,
                    "elites": report.elites,
                    "wall_s": report.extra["wall_s"],
                },
                indent=2,
                default=str,
            ),
        )
        return model, report, key, False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _load_verified(entry: Path, device: torch.device) -> dict[str, Any] | None:
    """The state of a cache entry, or None (with a warning naming it) when it is incomplete or corrupt."""
    path = entry / "model.pt"
    problem = None
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        meta, problem = {}, f"its meta.json is missing or unreadable ({type(err).__name__})"
    expected = meta.get("sha256")
    if problem is None and expected is not None and file_sha256(path) != expected:
        problem = "its checksum does not match meta.json"
    state = None
    if problem is None:  # entries of older versions have no checksum: loading them is the check
        try:
            state = torch.load(path, map_location=device, weights_only=False)
            if not isinstance(state, dict) or "model" not in state or "report" not in state:
                state, problem = None, "it does not hold a model and a fit report"
        except Exception as err:  # any unreadable pickle: retrain rather than fail every run needing it
            problem = f"it cannot be loaded ({type(err).__name__}: {err})"
    if problem is not None:
        warnings.warn(f"pretrained ensemble {path} is corrupt: {problem}; retraining it", stacklevel=3)
        return None
    return state


def cached_keys(cache_dir: Path) -> list[str]:
    """Keys of the complete pretraining cache entries."""
    root = cache_dir / "dynamics"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "model.pt").is_file())
