"""Download one dataset file, all or nothing (DESIGN.md, "Data and tasks"; evaluation.md §7).

The bytes stream into a temporary file next to the destination, the md5 is checked when one is known,
and only a complete, verified file is renamed into place (an atomic ``os.replace``). Whatever goes
wrong (network error, a connection closed mid-stream, an md5 mismatch, Ctrl-C) the temporary file is
removed, so the cache never holds a partial file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from zoo.data.errors import DatasetError, DatasetUnavailableError
from zoo.io import current_umask

CHUNK_SIZE = 1 << 20  # 1 MiB
TIMEOUT_S = 60.0  # socket timeout per blocking operation, not for the whole transfer
USER_AGENT = "mbrl-zoo (+https://pypi.org/project/mbrl-zoo/)"


def _by_hand(url: str, dest: Path) -> str:
    return (
        f"Download it by hand (for example `curl -L -o '{dest}' '{url}'`) and put it at {dest}, "
        "then run the command again."
    )


def download_file(url: str, dest: Path, md5: str | None = None, description: str | None = None) -> Path:
    """Download ``url`` to ``dest`` atomically, with a progress bar; return ``dest``.

    Raises :class:`DatasetUnavailableError` when the file cannot be fetched (it names the URL and the path
    where the file can be put by hand) and :class:`DatasetError` when the md5 does not match. No partial
    file is left behind in either case, nor after a KeyboardInterrupt (which is re-raised).
    """
    dest = Path(dest).expanduser()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    received = 0
                    progress = Progress(
                        TextColumn("[bold]{task.description}"),
                        BarColumn(),
                        DownloadColumn(),
                        TransferSpeedColumn(),
                        TimeRemainingColumn(),
                        console=Console(stderr=True),
                        transient=False,
                    )
                    with progress:
                        task = progress.add_task(description or dest.name, total=total)
                        while True:
                            chunk = response.read(CHUNK_SIZE)
                            if not chunk:
                                break
                            out.write(chunk)
                            digest.update(chunk)
                            received += len(chunk)
                            progress.update(task, advance=len(chunk))
                    if total is not None and received != total:
                        # http.client returns b"" when the server closes early; it does not raise.
                        raise DatasetUnavailableError(
                            f"the download of {url} stopped after {received} of {total} bytes (connection "
                            f"closed); nothing was written to {dest}. Try again. {_by_hand(url, dest)}"
                        )
            except urllib.error.HTTPError as e:
                raise DatasetUnavailableError(
                    f"could not download {url}: HTTP {e.code} {e.reason}. {_by_hand(url, dest)}"
                ) from e
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
                reason = getattr(e, "reason", None) or e
                raise DatasetUnavailableError(
                    f"could not download {url} ({reason}); no network, or the server is down. {_by_hand(url, dest)}"
                ) from e
            out.flush()
            os.fsync(out.fileno())
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise DatasetError(
                f"the file downloaded from {url} has md5 {digest.hexdigest()}, expected {md5}; it was "
                f"discarded and nothing was written to {dest}. Try again; if it keeps failing the server's "
                f"copy changed. {_by_hand(url, dest)}"
            )
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide a shared cache from its users
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def file_md5(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
