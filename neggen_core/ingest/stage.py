"""The ingest stage: where its inputs come from, what its version depends on, how it builds."""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import fsspec
import polars as pl

from neggen_core.artifacts.schemas import INTERACTIONS, ITEMS, QUARANTINE, USERS
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter, uri_of
from neggen_core.config import NeggenConfig
from neggen_core.demo.generator import GENERATOR_VERSION, META_FILE, REVIEWS_FILE, generate_demo
from neggen_core.errors import InputFormatError
from neggen_core.images import ImagePolicy
from neggen_core.ingest.pipeline import ingest_files
from neggen_core.redaction import redact

SCHEMA_VERSION = 1
TABLES = {"users": USERS, "items": ITEMS, "interactions": INTERACTIONS, "quarantine": QUARANTINE}
REPORT = "report.json"


def _fingerprint(path: str) -> str:
    """sha256 of a file's bytes, so that a version follows the data, not its location."""
    digest = hashlib.sha256()
    try:
        with fsspec.open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    except FileNotFoundError as exc:
        raise InputFormatError(
            f"{path}: no such file; check dataset.interactions / dataset.items in the config"
        ) from exc
    return digest.hexdigest()


def version_config(config: NeggenConfig) -> dict[str, Any]:
    """What the ingest version depends on: the format, the data and the ingest settings."""
    dataset = config.dataset
    source: dict[str, Any]
    if dataset.demo is not None:
        source = {"demo": dataset.demo.model_dump(), "generator_version": GENERATOR_VERSION}
    else:
        files = {"interactions": dataset.interactions, "items": dataset.items}
        source = {key: _fingerprint(path) for key, path in files.items() if path is not None}
    return {"format": dataset.format, "source": source, "ingest": config.ingest.model_dump()}


def demo_folder(store: ArtifactStore, config: NeggenConfig) -> str:
    """Where the demo catalogue of this config is written under the artifact root."""
    demo = config.dataset.demo
    assert demo is not None
    return store.path("source", f"{demo.scale}-seed{demo.seed}-v{GENERATOR_VERSION}")


def demo_source(
    store: ArtifactStore, config: NeggenConfig, progress: bool = True
) -> tuple[str, str]:
    """The demo catalogue's files under the artifact root, generated atomically when absent."""
    demo = config.dataset.demo
    assert demo is not None
    folder = demo_folder(store, config)
    name = posixpath.basename(folder)
    done = posixpath.join(folder, "COMPLETE")
    if not store.fs.exists(done):
        staging = posixpath.join(posixpath.dirname(folder), f".staging-{name}")
        if store.fs.exists(staging):
            store.fs.rm(staging, recursive=True)
        generate_demo(uri_of(store.fs, staging), demo.scale, demo.seed, progress=progress)
        if store.fs.exists(folder):
            store.fs.rm(folder, recursive=True)
        store.fs.mv(staging, folder, recursive=True)
        store.fs.touch(done)
    return (
        uri_of(store.fs, posixpath.join(folder, REVIEWS_FILE)),
        uri_of(store.fs, posixpath.join(folder, META_FILE)),
    )


def image_policy(config: NeggenConfig, store: ArtifactStore) -> ImagePolicy:
    """Where item images may be read from: `dataset.image_root`, or the folder of the metadata
    file (which ingest resolved relative image paths against; the demo's source folder)."""
    dataset = config.dataset
    root = dataset.image_root
    if root is None and dataset.demo is not None:
        root = uri_of(store.fs, demo_folder(store, config))
    elif root is None and dataset.items is not None:
        root = posixpath.dirname(dataset.items)
    return ImagePolicy(root=root, fetch_http=dataset.fetch_images)


def build(
    config: NeggenConfig,
    store: ArtifactStore,
    upstream: Mapping[str, ArtifactRef],
    writer: ArtifactWriter,
) -> dict[str, Any]:
    """Read the source, build the tables, write them and the report; returns manifest info."""
    dataset = config.dataset
    items: str | None
    if dataset.demo is not None:
        interactions, items = demo_source(store, config)
    else:
        assert dataset.interactions is not None
        interactions, items = dataset.interactions, dataset.items
    # each table is written, in the background, as soon as it is final
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="neggen-write") as background:
        writes: list[Future[None]] = []

        def write(name: str, table: pl.DataFrame) -> None:
            writes.append(background.submit(writer.write_table, name, table))

        result = ingest_files(
            dataset.format,
            interactions,
            items,
            config.ingest.k_core,
            write,
            max_line_bytes=config.ingest.max_line_bytes,
        )
        for done in writes:
            done.result()
    result.report["sources"] = {
        "interactions": redact(interactions),
        "items": redact(items) if items is not None else None,
    }
    writer.write_json(REPORT, result.report)
    return {
        "format": dataset.format,
        "sources": result.report["sources"],
        "users": result.report["users"],
        "items": result.report["items"],
        "interactions": result.report["interactions"],
        "split": result.report["split"],
        "quarantined": result.report["quarantine"]["total"],
    }
