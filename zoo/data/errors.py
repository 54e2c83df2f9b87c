"""The two errors a dataset loader raises (DESIGN.md, Conventions: "bad input gets a clear error").

- :class:`DatasetError`: the data is there but wrong (corrupt, truncated, a key missing, shapes that do not
  agree). The message names the file and what to do (usually: delete it and download it again).
- :class:`DatasetUnavailableError`: the data is not there and cannot be fetched (no network, download
  disabled). The message says how to download it, or where to put the file by hand.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np


class DatasetError(ValueError):
    """Bad, corrupt or mis-shaped dataset; the message names the file and the remedy."""


class DatasetUnavailableError(FileNotFoundError):
    """A dataset that is missing and could not be downloaded; the message says how to get it."""

    def __str__(self) -> str:  # FileNotFoundError formats (errno, strerror) pairs; keep the message plain
        return str(self.args[0]) if self.args else ""


def check_finite(where: str, arrays: Mapping[str, np.ndarray], fix: str = "") -> None:
    """Reject NaN or ±inf in any numeric array of a dataset, naming the file, the key and the first bad row.

    One non-finite observation makes the ensemble's holdout loss NaN (it silently keeps its untrained
    weights) and one non-finite reward makes every critic target NaN, so a loader refuses such data up front.
    ``where`` names the file or dataset; rows are counted from 0 along the first axis of each array.
    """
    for key, array in arrays.items():
        a = np.asarray(array)
        if a.dtype.kind not in "fc":  # integer and boolean arrays cannot hold NaN
            continue
        per_row = a.reshape(a.shape[0], -1) if a.ndim else a.reshape(1, 1)
        bad = ~np.isfinite(per_row)
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size == 0:
            continue
        first = int(rows[0])
        value = per_row[first][bad[first]][0]
        raise DatasetError(
            f"{where}: '{key}' holds a non-finite value ({value}) at row {first}"
            f" ({len(rows)} row(s) in all); the zoo cannot train on NaN or inf. "
            + (fix or "Repair or drop those rows, or download or collect the dataset again.")
        )


def check_dataset_file(path: Path) -> bool:
    """True when ``path`` is a readable dataset file, False when nothing is there; a directory (or another
    non-file) in its place, or a file this user may not read, is a :class:`DatasetError` that says so, rather
    than "not in the cache" or "corrupt, delete it" (the file itself may be fine)."""
    if not os.path.lexists(path):
        return False
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise DatasetError(f"{path} is {kind}, where the dataset file should be; move it away and get the file again")
    if not os.access(path, os.R_OK):
        raise DatasetError(f"{path} cannot be read (permission denied); fix its permissions (e.g. chmod a+r)")
    return True
