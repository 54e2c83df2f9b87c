"""download_file: atomic, md5-checked, no partial file on any failure (zoo/data/download.py)."""

from __future__ import annotations

import hashlib
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures import serve_files
from zoo.data.download import download_file, file_md5
from zoo.data.errors import DatasetError, DatasetUnavailableError

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB + 4 bytes: more than one chunk


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_download_success_with_md5(tmp_path: Path) -> None:
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    dest = tmp_path / "sub" / "data.bin"
    with serve_files({"/data.bin": PAYLOAD}) as base:
        out = download_file(f"{base}/data.bin", dest, md5=md5, description="data")
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert file_md5(dest) == md5
    assert _leftovers(dest.parent) == ["data.bin"]  # no temporary file left


def test_downloaded_file_gets_the_umask_mode(tmp_path: Path) -> None:
    """A shared dataset cache: the file is readable as the umask allows, not mkstemp's private 0600."""
    import os
    import stat

    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    old = os.umask(0o022)
    try:
        download_file(src.as_uri(), tmp_path / "out" / "copy.bin")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out" / "copy.bin").stat().st_mode) == 0o644


def test_download_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    dest = tmp_path / "out" / "copy.bin"
    download_file(src.as_uri(), dest, md5=hashlib.md5(PAYLOAD).hexdigest())
    assert dest.read_bytes() == PAYLOAD


def test_md5_mismatch_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    with serve_files({"/data.bin": PAYLOAD}) as base:
        with pytest.raises(DatasetError, match="md5") as info:
            download_file(f"{base}/data.bin", dest, md5="0" * 32)
    assert str(dest) in str(info.value)
    assert _leftovers(tmp_path) == []


def test_connection_closed_mid_stream_leaves_no_file(tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    with serve_files({"/data.bin": PAYLOAD}, truncate=["/data.bin"]) as base:
        with pytest.raises(DatasetUnavailableError) as info:
            download_file(f"{base}/data.bin", dest)
    assert str(dest) in str(info.value)
    assert _leftovers(tmp_path) == []


class _InterruptingResponse:
    """Wraps a real response; the second read raises KeyboardInterrupt (Ctrl-C mid-download)."""

    def __init__(self, response: object) -> None:
        self._r = response
        self.headers = response.headers  # type: ignore[attr-defined]
        self.reads = 0

    def read(self, n: int = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise KeyboardInterrupt
        return self._r.read(n)  # type: ignore[attr-defined]

    def __enter__(self) -> _InterruptingResponse:
        return self

    def __exit__(self, *exc: object) -> None:
        self._r.close()  # type: ignore[attr-defined]


def test_keyboard_interrupt_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _InterruptingResponse(real(*a, **k)))
    dest = tmp_path / "data.bin"
    with serve_files({"/data.bin": PAYLOAD}) as base:
        with pytest.raises(KeyboardInterrupt):
            download_file(f"{base}/data.bin", dest)
    assert _leftovers(tmp_path) == []


def test_no_network_names_url_and_path(tmp_path: Path) -> None:
    dest = tmp_path / "d4rl" / "hopper_medium-v2.hdf5"
    url = f"http://127.0.0.1:{_closed_port()}/hopper_medium-v2.hdf5"
    with pytest.raises(DatasetUnavailableError) as info:
        download_file(url, dest)
    msg = str(info.value)
    assert url in msg and str(dest) in msg and "by hand" in msg
    assert isinstance(info.value, FileNotFoundError)
    assert _leftovers(dest.parent) == []


def test_urlerror_is_dataset_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", fail)
    dest = tmp_path / "x.npz"
    with pytest.raises(DatasetUnavailableError, match="name resolution"):
        download_file("http://datasets.example/x.npz", dest)
    assert _leftovers(tmp_path) == []


def test_http_404(tmp_path: Path) -> None:
    with serve_files({}) as base:
        with pytest.raises(DatasetUnavailableError, match="404"):
            download_file(f"{base}/missing.bin", tmp_path / "missing.bin")
    assert _leftovers(tmp_path) == []


def test_failed_redownload_keeps_existing_file(tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"old complete file")
    with serve_files({"/data.bin": PAYLOAD}, truncate=["/data.bin"]) as base:
        with pytest.raises(DatasetUnavailableError):
            download_file(f"{base}/data.bin", dest)
    assert dest.read_bytes() == b"old complete file"
    assert _leftovers(tmp_path) == ["data.bin"]
