"""The attributes stage's I/O: template 1 (describe + extract) over every item, in resumable
batches, then the key features (the logic is in `compute.py`, `keys.py` and `lineage.py`).

Batch b of the items (by item_idx) becomes part b of `descriptions` and `attributes`; a batch
whose parts exist is not redone, so a killed run resumes where it stopped, and batches can be
built by separate shards (`neggen_core.sharding`) before one finish. Then the key features: a
backend that marks them itself (an LLM) keeps its marks and `key_features` reports how often
each attribute was marked; otherwise they are chosen per category from the users' train
interactions (borrowed along the category's lineage where its own are too few) and the `is_key`
column of every part is set from that choice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import polars as pl

from neggen_core import progress
from neggen_core.artifacts.schemas import ATTRIBUTES
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.attributes.compute import (
    check_invalid_share,
    chosen_keys,
    marked_keys,
    report,
    result_frames,
    set_is_key,
)
from neggen_core.attributes.contract import (
    REPORT,
    SCHEMA_VERSION,
    TABLES,
    UPSTREAM,
    item_categories,
    item_inputs,
    version_config,
)
from neggen_core.categories import category_lineage
from neggen_core.config import NeggenConfig
from neggen_core.ingest.contract import image_policy, read_interactions, read_items
from neggen_core.llm.backend import Backend, open_backend
from neggen_core.llm.prompts import DESCRIBE_EXTRACT, load_template
from neggen_core.pipeline.spec import StageSpec
from neggen_core.sharding import Stats, counted, still_to_do


def _mark_parts(
    writer: ArtifactWriter, keys: pl.DataFrame, categories: pl.DataFrame, parts: list[int]
) -> pl.DataFrame:
    """Rewrite every attributes part with `is_key` from the chosen key features; returns all
    the marked rows."""
    marked_parts = []
    for part in parts:
        frame = pl.from_arrow(writer.read_part("attributes", part))
        assert isinstance(frame, pl.DataFrame)
        marked = set_is_key(frame, keys, categories)
        writer.write_table("attributes", marked, part=part)
        marked_parts.append(marked)
    return pl.concat(marked_parts) if marked_parts else pl.DataFrame(schema=pl.Schema(ATTRIBUTES))


class AttributesJob:
    """Template 1 over the items in batches of `attributes.batch_size`, then the key features."""

    marker = "descriptions"

    def __init__(
        self, config: NeggenConfig, store: ArtifactStore, upstream: Mapping[str, ArtifactRef]
    ) -> None:
        self.config, self.store = config, store
        self.ingest = upstream["ingest"]
        self.items = read_items(store, self.ingest)
        inputs = item_inputs(self.items)
        size = config.attributes.batch_size
        self.chunks = [inputs[start : start + size] for start in range(0, len(inputs), size)]
        self.batches = len(self.chunks)
        self.template = load_template(DESCRIBE_EXTRACT)

    @cached_property
    def backend(self) -> Backend:
        return open_backend(self.config, self.store, image_policy(self.config, self.store))

    def build(self, writer: ArtifactWriter, numbers: Sequence[int]) -> Stats:
        todo = still_to_do(writer, self.marker, numbers)
        if not todo:
            return {}
        started, before = time.perf_counter(), self.backend.stats()
        for done, number in enumerate(todo, 1):
            batch = self.chunks[number]
            results = self.backend.extract(batch)
            attributes, descriptions = result_frames(
                results, batch, self.backend.source, self.template.version
            )
            writer.write_table("attributes", attributes, part=number)
            writer.write_table("descriptions", descriptions, part=number)  # last: batch done
            progress.report("attributes", done, len(todo))
        return {**counted(before, self.backend.stats()), "seconds": time.perf_counter() - started}

    def finish(self, writer: ArtifactWriter, stats: Stats) -> dict[str, Any]:
        started = time.perf_counter()
        items, backend = self.items, self.backend
        descriptions = writer.read_written("descriptions")
        check_invalid_share(descriptions, backend.source, self.config.llm.max_invalid_share)
        attributes = writer.read_written("attributes")
        categories = item_categories(items, self.config.attributes.category_level)
        if backend.marks_keys:
            keys = marked_keys(attributes, categories)
        else:
            train = read_interactions(self.store, self.ingest, split="train")
            keys = chosen_keys(
                attributes,
                categories,
                train.select("user_idx", "item_idx"),
                self.config.attributes.key_features,
                category_lineage(items, self.config.attributes.category_level),
            )
            attributes = _mark_parts(writer, keys, categories, list(range(self.batches)))
        writer.write_table("key_features", keys.with_columns(pl.col("rank").cast(pl.Int32)))

        counters = {key: 0 for key in backend.stats()} | stats
        seconds = counters.pop("seconds", 0.0) + time.perf_counter() - started
        summary = report(
            items, attributes, descriptions, keys, backend.name, backend.model, counters, seconds
        )
        writer.write_json(REPORT, summary)
        return {
            "backend": backend.name,
            "model": backend.model,
            "prompt_version": self.template.version,
            "items": summary["items"],
            "items_with_key_attribute": summary["items_with_key_attribute"],
            "invalid": summary["invalid"],
        }


SPEC = StageSpec("attributes", UPSTREAM, SCHEMA_VERSION, TABLES, version_config, job=AttributesJob)
