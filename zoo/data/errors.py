"""The two errors a dataset loader raises (DESIGN.md, Conventions: "bad input gets a clear error").

- :class:`DatasetError`: the data is there but wrong (corrupt, truncated, a key missing, shapes that do not
  agree). The message names the file and what to do (usually: delete it and download it again).
- :class:`DatasetUnavailableError`: the data is not there and cannot be fetched (no network, download
  disabled). The message says how to download it, or where to put the file by hand.
"""

from __future__ import annotations


class DatasetError(ValueError):
    """Bad, corrupt or mis-shaped dataset; the message names the file and the remedy."""


class DatasetUnavailableError(FileNotFoundError):
    """A dataset that is missing and could not be downloaded; the message says how to get it."""

    def __str__(self) -> str:  # FileNotFoundError formats (errno, strerror) pairs; keep the message plain
        return str(self.args[0]) if self.args else ""
