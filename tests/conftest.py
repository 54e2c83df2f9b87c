"""Shared fixtures: one session-scoped data directory holding the quick suite's datasets."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def quick_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ZOO_DATA directory for the whole session; quick datasets are collected into it on first use."""
    root = Path(os.environ.get("ZOO_TEST_DATA") or tmp_path_factory.mktemp("zoo_data"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_DATA", str(root))
        yield root


@pytest.fixture
def quick_env(quick_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Per-test view of the session data directory (re-applied after function-level monkeypatches)."""
    monkeypatch.setenv("ZOO_DATA", str(quick_data_dir))
    return quick_data_dir


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` are skipped, with the reason, where torch sees no CUDA device."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
