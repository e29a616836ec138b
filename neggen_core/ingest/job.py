"""The ingest stage's I/O: the source files (the demo catalogue generated when absent), read
and ingested, and the tables and report written."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import polars as pl

from neggen_core.artifacts.publish import is_published, publish_folder
from neggen_core.artifacts.store import ArtifactStore, uri_of
from neggen_core.config import NeggenConfig
from neggen_core.demo.generator import META_FILE, REVIEWS_FILE, generate_demo
from neggen_core.ingest.compute import (
    IngestResult,
    attach_items,
    clean_interactions,
    ingest_result,
    require_interactions,
)
from neggen_core.ingest.contract import (
    REPORT,
    SCHEMA_VERSION,
    TABLES,
    UPSTREAM,
    demo_folder,
    version_config,
)
from neggen_core.ingest.formats import FORMATS
from neggen_core.ingest.records import MAX_LINE_BYTES, Quarantine
from neggen_core.pipeline.spec import Build, StageSpec
from neggen_core.redaction import redact

DEMO_MARKER = "COMPLETE"  # written last: the demo catalogue's folder is complete


def demo_source(
    store: ArtifactStore, config: NeggenConfig, progress: bool = True
) -> tuple[str, str]:
    """The demo catalogue's files under the artifact root, generated atomically when absent."""
    demo = config.dataset.demo
    assert demo is not None
    folder = demo_folder(store, config)
    if not is_published(store.fs, folder, DEMO_MARKER):
        staging = posixpath.join(
            posixpath.dirname(folder), f".staging-{posixpath.basename(folder)}"
        )
        if store.fs.exists(staging):
            store.fs.rm(staging, recursive=True)
        generate_demo(uri_of(store.fs, staging), demo.scale, demo.seed, progress=progress)
        publish_folder(store.fs, staging, folder, DEMO_MARKER, b"")
    return (
        uri_of(store.fs, posixpath.join(folder, REVIEWS_FILE)),
        uri_of(store.fs, posixpath.join(folder, META_FILE)),
    )


def ingest_files(
    fmt: str,
    interactions: str,
    items: str | None,
    k: int,
    sink: Callable[[str, pl.DataFrame], None] | None = None,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> IngestResult:
    """Read and ingest one dataset.

    The metadata file is read in a second thread (which hands Python-literal parsing to a
    subprocess) while the interactions are read, cleaned and, through `sink`, written; so the
    two overlap. `sink(name, table)` receives each output table as soon as it is final.
    """
    spec = FORMATS[fmt]
    review_quarantine, item_quarantine = Quarantine(), Quarantine()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="neggen-meta") as pool:
        pending = (
            pool.submit(spec.read_items, items, item_quarantine, max_line_bytes) if items else None
        )
        reviews, review_stats = spec.read_reviews(interactions, review_quarantine, max_line_bytes)
        clean = clean_interactions(reviews, k, review_quarantine, spec.timestamp_divisor)
        require_interactions(interactions, clean, review_stats)
        if sink is not None:
            sink("users", clean.users)
            sink("interactions", clean.interactions)
        meta, meta_stats = pending.result() if pending else (None, None)
    table, item_report = attach_items(clean, meta, item_quarantine)
    files = [review_stats] + ([meta_stats] if meta_stats else [])
    result = ingest_result(clean, table, item_report, [review_quarantine, item_quarantine], files)
    if sink is not None:
        sink("items", result.items)
        sink("quarantine", result.quarantine)
    return result


def build(ctx: Build) -> dict[str, Any]:
    """Read the source, build the tables, write them and the report; returns manifest info."""
    config, store, writer = ctx.config, ctx.store, ctx.writer
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


SPEC = StageSpec("ingest", UPSTREAM, SCHEMA_VERSION, TABLES, version_config, build=build)
