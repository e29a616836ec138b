"""What the ingest stage promises: its tables, what its version depends on (the input files'
content, not their place), where item images may be read from, and typed readers of its tables
for the stages downstream."""

from __future__ import annotations

import hashlib
import os
import posixpath
from typing import Any

import fsspec
import polars as pl
from fsspec.implementations.local import LocalFileSystem

from neggen_core.artifacts.schemas import INTERACTIONS, ITEMS, QUARANTINE, USERS
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, uri_of
from neggen_core.config import NeggenConfig
from neggen_core.demo.generator import DEMO_VERSION
from neggen_core.errors import InputFormatError
from neggen_core.images import ImagePolicy

UPSTREAM: tuple[str, ...] = ()
# 2: image paths relative to the metadata file's folder; 3: HTML entities decoded in categories
SCHEMA_VERSION = 3
TABLES = {"users": USERS, "items": ITEMS, "interactions": INTERACTIONS, "quarantine": QUARANTINE}
REPORT = "report.json"


_fingerprints: dict[tuple[str, int, int, int], str] = {}


def _fingerprint(path: str) -> str:
    """sha256 of a file's bytes, so that a version follows the data, not its location. A local
    file is hashed once per process while its inode, size and modification time are unchanged;
    any other is hashed every time (an HTTP server's file, say, has no such signature)."""
    fs, inner = fsspec.core.url_to_fs(path)
    if not isinstance(fs, LocalFileSystem):
        return _sha256(path)
    try:
        stat = os.stat(inner)
    except FileNotFoundError as exc:
        raise _missing(path) from exc
    key = (inner, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _fingerprints:
        _fingerprints[key] = _sha256(path)
    return _fingerprints[key]


def _missing(path: str) -> InputFormatError:
    return InputFormatError(
        f"{path}: no such file; check dataset.interactions / dataset.items in the config"
    )


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with fsspec.open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise _missing(path) from exc
    return digest.hexdigest()


def version_config(config: NeggenConfig) -> dict[str, Any]:
    """What the ingest version depends on: the format, the data and the ingest settings."""
    dataset = config.dataset
    source: dict[str, Any]
    if dataset.demo is not None:
        source = {"demo": dataset.demo.model_dump(), "generator_version": DEMO_VERSION}
    else:
        files = {"interactions": dataset.interactions, "items": dataset.items}
        source = {key: _fingerprint(path) for key, path in files.items() if path is not None}
    return {"format": dataset.format, "source": source, "ingest": config.ingest.model_dump()}


def demo_folder(store: ArtifactStore, config: NeggenConfig) -> str:
    """Where the demo catalogue of this config is written under the artifact root."""
    demo = config.dataset.demo
    assert demo is not None
    return store.path("source", f"{demo.scale}-seed{demo.seed}-v{DEMO_VERSION}")


def image_policy(config: NeggenConfig, store: ArtifactStore) -> ImagePolicy:
    """Where item images may be read from: `dataset.image_root`, or the folder of the metadata
    file (the demo's source folder), which the items' relative image paths are relative to."""
    dataset = config.dataset
    base = None
    if dataset.demo is not None:
        base = uri_of(store.fs, demo_folder(store, config))
    elif dataset.items is not None:
        base = posixpath.dirname(dataset.items)
    return ImagePolicy(root=dataset.image_root or base, base=base, fetch_http=dataset.fetch_images)


def read_items(store: ArtifactStore, ref: ArtifactRef) -> pl.DataFrame:
    """The `items` table (one row per item_idx)."""
    return store.read_frame(ref, "items", ITEMS)


def read_interactions(
    store: ArtifactStore, ref: ArtifactRef, split: str | None = None
) -> pl.DataFrame:
    """(user_idx, item_idx, split) of every interaction, or of one split's."""
    frame = store.read_frame(ref, "interactions", INTERACTIONS, ["user_idx", "item_idx", "split"])
    return frame if split is None else frame.filter(pl.col("split") == split)


def user_count(store: ArtifactStore, ref: ArtifactRef) -> int:
    return store.manifest(ref.stage, ref.version).tables["users"].rows


def item_count(store: ArtifactStore, ref: ArtifactRef) -> int:
    return store.manifest(ref.stage, ref.version).tables["items"].rows
