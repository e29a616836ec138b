"""What produced a result: the source commit and the versions of the libraries that shape it."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from neggen_core import __version__

LIBRARIES = ("torch", "prefect", "polars", "pyarrow", "faiss-cpu", "numpy", "sentence-transformers")
SOURCE = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(SOURCE), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def software() -> dict[str, Any]:
    """The package version, the git commit of its source (null outside a checkout; `dirty`
    when it has uncommitted changes), Python's version and each library's (null when absent).
    Libraries are read from their installed metadata, not imported."""
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "neggen": __version__,
        "commit": commit,
        "dirty": bool(status) if commit else None,
        "python": platform.python_version(),
        "libraries": versions,
    }
