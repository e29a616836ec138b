"""Atomic publishing on any fsspec filesystem, the one implementation the store, the demo source,
the LLM response cache and the vector cache use: a file is written under a temporary name and
renamed; a folder is built in a staging folder, moved into place, and then gets its marker file,
written last, so a folder without its marker is never read as published."""

from __future__ import annotations

import posixpath
import uuid
from collections.abc import Callable

import fsspec

TEMPORARY_SUFFIX = ".tmp"


def temporary(path: str) -> str:
    """A unique temporary name beside `path`."""
    return f"{path}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"


def is_temporary(path: str) -> bool:
    """Whether `path` is a file being written (or left by a crash while it was)."""
    return path.endswith(TEMPORARY_SUFFIX)


def write_file(
    fs: fsspec.AbstractFileSystem, path: str, write: Callable[[str], None] | bytes
) -> None:
    """Publish one file atomically: `write(tmp)` (or the bytes) to a temporary name, renamed."""
    tmp = temporary(path)
    if isinstance(write, bytes):
        with fs.open(tmp, "wb") as handle:
            handle.write(write)
    else:
        write(tmp)
    fs.mv(tmp, path)


def is_published(fs: fsspec.AbstractFileSystem, folder: str, marker: str) -> bool:
    return bool(fs.exists(posixpath.join(folder, marker)))


def publish_folder(
    fs: fsspec.AbstractFileSystem, staging: str, folder: str, marker: str, content: bytes
) -> None:
    """Move a finished staging folder to `folder` (replacing a half-published one), then write
    its marker file: the folder is published."""
    if fs.exists(folder):
        fs.rm(folder, recursive=True)
    fs.mv(staging, folder, recursive=True)
    write_file(fs, posixpath.join(folder, marker), content)
