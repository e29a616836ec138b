"""The attributes stage's logic on frames: a batch's extraction results as table rows, the
key features (chosen from the users' choices, or as a model marked them) and the `is_key`
marks, the check on invalid replies and the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from neggen_core.artifacts.schemas import ATTRIBUTES, DESCRIPTIONS, KEY_FEATURES
from neggen_core.attributes.keys import choose_keys, evidence, score_attributes
from neggen_core.categories import Lineage
from neggen_core.errors import BackendError
from neggen_core.llm.models import ExtractionResult, ItemInput


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


def chosen_keys(
    attributes: pl.DataFrame,
    categories: pl.DataFrame,
    train: pl.DataFrame,
    per_category: int,
    lineage: Lineage | None = None,
) -> pl.DataFrame:
    """Key features chosen per category from the users' train interactions (`keys.py`), an
    attribute's lift borrowed along the category's `lineage` where its own data is too thin
    (without one, from all the items only).

    `categories`: item_idx, category; `train`: user_idx, item_idx."""
    found = attributes.select("item_idx", "modality", "name", "value")
    lineage = lineage or Lineage.global_only(categories)
    scores = score_attributes(found, categories, train)
    borrowed = score_attributes(found, lineage.members.rename({"group": "category"}), train)
    presence = found.join(categories, on="item_idx").select(
        "category", "item_idx", "modality", "name"
    )
    return choose_keys(evidence(scores, borrowed, lineage.donors), presence, per_category)


def set_is_key(
    attributes: pl.DataFrame, keys: pl.DataFrame, categories: pl.DataFrame
) -> pl.DataFrame:
    """`attributes` with `is_key` true exactly where (item's category, modality, name) is one
    of the chosen `keys`; `categories`: item_idx, category."""
    key_set = keys.select("category", "modality", "name").with_columns(pl.lit(True).alias("key"))
    return (
        attributes.join(categories, on="item_idx", how="left")
        .join(key_set, on=["category", "modality", "name"], how="left")
        .with_columns(pl.col("key").fill_null(False).alias("is_key"))
        .select(ATTRIBUTES.names)
    )


def check_invalid_share(descriptions: pl.DataFrame, source: str, limit: float) -> None:
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


def marked_keys(attributes: pl.DataFrame, categories: pl.DataFrame) -> pl.DataFrame:
    """Key features as the model marked them: per category, how often each attribute was key
    (source `marked`)."""
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
            pl.lit(None, dtype=pl.Int64).alias("support"),
            pl.lit("marked").alias("source"),
        )
        .sort("category", "score", "modality", "name", descending=[False, True, False, False])
        .with_columns(pl.int_range(pl.len()).over("category").alias("rank"))
        .select(KEY_FEATURES.names)
    )


def report(
    items: pl.DataFrame,
    attributes: pl.DataFrame,
    descriptions: pl.DataFrame,
    keys: pl.DataFrame,
    backend: str,
    model: str,
    counters: Mapping[str, float],
    seconds: float,
) -> dict[str, Any]:
    """The stage's report: coverage, invalid replies, images not read, attributes and keys (and
    how many keys came from where: own, parent, similar, global or marked)."""
    statuses = descriptions.filter(pl.col("modality") == "text")
    with_key = attributes.filter(pl.col("is_key")).get_column("item_idx").n_unique()
    return {
        "backend": backend,
        "model": model,
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
        "key_sources": dict(
            keys.group_by(pl.col("source").str.extract(r"^([^:]+)"))
            .len()
            .sort("source")
            .iter_rows()
        ),
        **counters,
        "seconds": round(seconds, 2),
    }
