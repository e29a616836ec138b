"""The attributes stage: template 1 (describe + extract) over every item, in resumable batches.

Batch b of the items (by item_idx) becomes part b of `descriptions` and `attributes`; a batch
whose parts exist is not redone, so a killed run resumes where it stopped, and batches can be
built by separate shards (`neggen_core.sharding`) before one finish. Then the key
features: a backend that marks them itself (an LLM) keeps its marks and `key_features` reports
how often each attribute was marked; otherwise they are chosen per category from the users'
train interactions (`keys.py`) and the `is_key` column of every part is set from that choice.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import polars as pl

from neggen_core import progress
from neggen_core.artifacts.schemas import (
    ATTRIBUTES,
    DESCRIPTIONS,
    INTERACTIONS,
    ITEMS,
    KEY_FEATURES,
)
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.attributes.keys import choose_keys, score_attributes
from neggen_core.config import NeggenConfig
from neggen_core.errors import BackendError
from neggen_core.ingest.stage import image_policy
from neggen_core.llm.backend import Backend, open_backend
from neggen_core.llm.backend import version_config as backend_version
from neggen_core.llm.models import ExtractionResult, ItemInput
from neggen_core.llm.prompts import DESCRIBE_EXTRACT, load_template
from neggen_core.sharding import Stats, counted, still_to_do

SCHEMA_VERSION = 1
TABLES = {"attributes": ATTRIBUTES, "descriptions": DESCRIPTIONS, "key_features": KEY_FEATURES}
REPORT = "report.json"
UNCATEGORISED = "(uncategorised)"


def version_config(config: NeggenConfig) -> dict[str, Any]:
    """What the attributes version depends on (not concurrency, timeouts or the API key)."""
    return {
        "llm": backend_version(config),
        "attributes": config.attributes.model_dump(),
        "prompt_version": load_template(DESCRIBE_EXTRACT).version,
    }


def item_inputs(items: pl.DataFrame) -> list[ItemInput]:
    return [
        ItemInput(
            item_idx=row["item_idx"],
            title=row["title"],
            description=row["description"],
            brand=row["brand"],
            categories=tuple(row["categories"]),
            image_uri=row["image_uri"],
        )
        for row in items.sort("item_idx").iter_rows(named=True)
    ]


def result_frames(
    results: Sequence[ExtractionResult],
    items: Sequence[ItemInput],
    source: str,
    prompt_version: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(attributes, descriptions) rows of one batch."""
    by_idx = {item.item_idx: item for item in items}
    attributes: list[dict[str, Any]] = []
    descriptions: list[dict[str, Any]] = []
    for result in results:
        item = by_idx[result.item_idx]
        common = {"item_idx": result.item_idx, "source": source, "prompt_version": prompt_version}
        status = {"status": result.status, "reason": result.reason}
        descriptions.append({**common, "modality": "text", "text": item.text() or None, **status})
        if item.image_uri and result.image_problem is not None:
            # the image was not read: the item is text-only, the row says why
            skipped = {"status": "skipped", "reason": f"image: {result.image_problem}"}
            descriptions.append({**common, "modality": "image", "text": None, **skipped})
        elif item.image_uri:
            visual = result.extraction.visual_description if result.extraction else None
            descriptions.append({**common, "modality": "image", "text": visual, **status})
        if result.extraction is not None:
            seen: set[tuple[str, str]] = set()
            for attribute in result.extraction.attributes:
                if (attribute.modality, attribute.name) in seen:
                    continue
                seen.add((attribute.modality, attribute.name))
                attributes.append({**common, **attribute.model_dump()})
    return (
        pl.DataFrame(attributes, schema=pl.Schema(ATTRIBUTES), orient="row"),
        pl.DataFrame(descriptions, schema=pl.Schema(DESCRIPTIONS), orient="row"),
    )


def item_categories(items: pl.DataFrame, level: int) -> pl.DataFrame:
    """item_idx -> the category that groups it for key features (its path at `level`, or its
    deepest level when the path is shorter)."""
    path = pl.col("categories")
    depth = path.list.len()
    chosen = (
        pl.when(depth > level)
        .then(path.list.get(level, null_on_oob=True))
        .otherwise(path.list.last())
    )
    return items.select("item_idx", chosen.fill_null(UNCATEGORISED).alias("category"))


def _mark_keys(
    writer: ArtifactWriter, keys: pl.DataFrame, categories: pl.DataFrame, parts: list[int]
) -> pl.DataFrame:
    """Rewrite every attributes part with `is_key` from the chosen key features; returns all
    the marked rows."""
    key_set = keys.select("category", "modality", "name").with_columns(pl.lit(True).alias("key"))
    marked_parts = []
    for part in parts:
        frame = pl.from_arrow(writer.read_part("attributes", part))
        assert isinstance(frame, pl.DataFrame)
        marked = (
            frame.join(categories, on="item_idx", how="left")
            .join(key_set, on=["category", "modality", "name"], how="left")
            .with_columns(pl.col("key").fill_null(False).alias("is_key"))
            .select(ATTRIBUTES.names)
        )
        writer.write_table("attributes", marked, part=part)
        marked_parts.append(marked)
    return pl.concat(marked_parts) if marked_parts else pl.DataFrame(schema=pl.Schema(ATTRIBUTES))


class Job:
    """Template 1 over the items in batches of `attributes.batch_size`, then the key features."""

    marker = "descriptions"

    def __init__(
        self, config: NeggenConfig, store: ArtifactStore, upstream: Mapping[str, ArtifactRef]
    ) -> None:
        self.config = config
        self.store = store
        self.ingest = upstream["ingest"]
        self.items = store.read_frame(self.ingest, "items", ITEMS)
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
        _check_invalid_share(descriptions, backend.source, self.config.llm.max_invalid_share)
        attributes = writer.read_written("attributes")
        categories = item_categories(items, self.config.attributes.category_level)
        if backend.marks_keys:
            keys = _marked_keys(attributes, categories)
        else:
            train = self.store.read_frame(
                self.ingest, "interactions", INTERACTIONS, ["user_idx", "item_idx", "split"]
            )
            train = train.filter(pl.col("split") == "train").select("user_idx", "item_idx")
            found = attributes.select("item_idx", "modality", "name", "value")
            scores = score_attributes(found, categories, train)
            presence = found.join(categories, on="item_idx").select(
                "category", "item_idx", "modality", "name"
            )
            keys = choose_keys(scores, presence, self.config.attributes.key_features)
            attributes = _mark_keys(writer, keys, categories, list(range(self.batches)))
        writer.write_table("key_features", keys.with_columns(pl.col("rank").cast(pl.Int32)))

        counters = {key: 0 for key in backend.stats()} | stats
        seconds = counters.pop("seconds", 0.0) + time.perf_counter() - started
        report = _report(items, attributes, descriptions, keys, backend, counters, seconds)
        writer.write_json(REPORT, report)
        return {
            "backend": backend.name,
            "model": backend.model,
            "prompt_version": self.template.version,
            "items": report["items"],
            "items_with_key_attribute": report["items_with_key_attribute"],
            "invalid": report["invalid"],
        }


def _check_invalid_share(descriptions: pl.DataFrame, source: str, limit: float) -> None:
    """Fail, rather than commit, when more than `limit` of the items got no valid reply."""
    texts = descriptions.filter(pl.col("modality") == "text")
    invalid = texts.filter(pl.col("status") == "invalid")
    if texts.height and invalid.height / texts.height > limit:
        reasons = invalid.group_by("reason").len().sort("len", descending=True).head(3)
        raise BackendError(
            f"{invalid.height} of {texts.height} items ({invalid.height / texts.height:.1%}) got "
            f"no valid reply from {source}, above llm.max_invalid_share ({limit:.0%}); most "
            f"common reasons: {dict(reasons.iter_rows())}. The batches are kept: fix the model "
            "or prompt (a new version), or raise llm.max_invalid_share and rerun to commit them"
        )


def _marked_keys(attributes: pl.DataFrame, categories: pl.DataFrame) -> pl.DataFrame:
    """Key features as the model marked them: per category, how often each attribute was key."""
    marked = attributes.join(categories, on="item_idx")
    items = categories.group_by("category").agg(pl.len().alias("items"))
    return (
        marked.group_by("category", "modality", "name")
        .agg(pl.col("is_key").sum().alias("marked"), pl.col("item_idx").n_unique().alias("with"))
        .join(items, on="category")
        .filter(pl.col("marked") > 0)
        .with_columns(
            (pl.col("marked") / pl.col("with")).alias("lift"),
            (pl.col("with") / pl.col("items")).alias("coverage"),
            (pl.col("marked") / pl.col("items")).alias("score"),
            pl.lit(0, dtype=pl.Int64).alias("users"),
        )
        .sort("category", "score", "modality", "name", descending=[False, True, False, False])
        .with_columns(pl.int_range(pl.len()).over("category").alias("rank"))
        .select(KEY_FEATURES.names)
    )


def _report(
    items: pl.DataFrame,
    attributes: pl.DataFrame,
    descriptions: pl.DataFrame,
    keys: pl.DataFrame,
    backend: Backend,
    counters: Mapping[str, float],
    seconds: float,
) -> dict[str, Any]:
    statuses = descriptions.filter(pl.col("modality") == "text")
    with_key = attributes.filter(pl.col("is_key")).get_column("item_idx").n_unique()
    return {
        "backend": backend.name,
        "model": backend.model,
        "items": items.height,
        "items_covered": statuses.filter(pl.col("status") == "ok").height,
        "invalid": statuses.filter(pl.col("status") == "invalid").height,
        "invalid_reasons": dict(
            statuses.filter(pl.col("status") == "invalid").group_by("reason").len().iter_rows()
        ),
        "items_with_key_attribute": with_key,
        "share_with_key_attribute": round(with_key / max(items.height, 1), 4),
        "items_with_image": items.get_column("image_uri").is_not_null().sum(),
        "images_not_read": dict(
            descriptions.filter((pl.col("modality") == "image") & (pl.col("status") == "skipped"))
            .select(pl.col("reason").str.replace(r"^image: ", "").str.extract(r"^([^(:]+)"))
            .group_by("reason")
            .len()
            .sort("reason")
            .iter_rows()
        ),
        "attributes_per_modality": dict(
            attributes.group_by("modality").len().sort("modality").iter_rows()
        ),
        "attributes_per_name": dict(
            attributes.group_by("name").len().sort("len", descending=True).iter_rows()
        ),
        "key_features": {
            category: [f"{m}:{n}" for m, n in zip(group["modality"], group["name"], strict=True)]
            for (category,), group in keys.sort("category", "rank").group_by(
                "category", maintain_order=True
            )
        },
        **counters,
        "seconds": round(seconds, 2),
    }
