"""Where the zoo finds its recipes and keeps its data.

- Recipes: the ``configs/`` tree shipped inside the wheel (``zoo/configs``), or the repository's
  ``configs/`` in a source checkout, plus any directory a user adds with ``--config-dir`` (searched first).
- Data: ``$ZOO_DATA`` (default ``~/.cache/zoo``).
"""

from __future__ import annotations

import os
from pathlib import Path

_USER_CONFIG_DIRS: list[Path] = []


def builtin_config_dir() -> Path:
    """The shipped recipes: ``zoo/configs`` in an installed wheel, ``<repo>/configs`` in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "algos").is_dir():
            return candidate
    raise FileNotFoundError(f"the zoo's configs directory is missing (looked in {here / 'configs'})")


def add_config_dir(path: str | os.PathLike[str]) -> None:
    """Add a user's recipe directory (with ``algos/``, ``suites/`` or ``presets/`` inside); searched first."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"--config-dir {path}: not a directory")
    if p not in _USER_CONFIG_DIRS:
        _USER_CONFIG_DIRS.insert(0, p)


def config_dirs() -> list[Path]:
    """User directories first, then the built-in one."""
    return [*_USER_CONFIG_DIRS, builtin_config_dir()]


def find_config(kind: str, name: str) -> Path:
    """``configs/<kind>/<name>.toml`` from the first directory that has it, or a path to a file."""
    direct = Path(name).expanduser()
    if direct.suffix == ".toml" and direct.is_file():
        return direct.resolve()
    for base in config_dirs():
        candidate = base / kind / f"{name}.toml"
        if candidate.is_file():
            return candidate
    available = sorted(list_configs(kind))
    raise FileNotFoundError(
        f"no {kind[:-1] if kind.endswith('s') else kind} recipe named {name!r}; available: "
        f"{', '.join(available) or '(none)'} (add your own directory with --config-dir)"
    )


def list_configs(kind: str) -> dict[str, Path]:
    """name -> path of every ``configs/<kind>/*.toml``; user directories shadow built-ins."""
    found: dict[str, Path] = {}
    for base in reversed(config_dirs()):
        folder = base / kind
        if folder.is_dir():
            for p in sorted(folder.glob("*.toml")):
                found[p.stem] = p
    return found


def data_dir() -> Path:
    """The zoo's dataset cache: ``$ZOO_DATA`` or ``~/.cache/zoo``."""
    return Path(os.environ.get("ZOO_DATA", "~/.cache/zoo")).expanduser()
