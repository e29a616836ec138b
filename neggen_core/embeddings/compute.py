"""The embeddings stage's logic on frames and matrices: what is embedded (item texts, their
visual descriptions and attribute texts, the valid negatives') and in which order, the vectors
of rows assembled from the encoded texts, the scores and flags of the negatives, and the counts
of the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from neggen_core.attributes.contract import item_inputs
from neggen_core.encoders.cached import AttributeRow, attribute_text, changed, joint, text_key


@dataclass(frozen=True)
class Inputs:
    """What is embedded: items (item_idx, text, visual, attributes, image_uri) and valid
    negatives (negative_id, item_idx, user_idx, kind, modality, text, visual, attributes,
    possible_false_negative); `attributes` is the attribute text, null where not embedded."""

    items: pl.DataFrame
    negatives: pl.DataFrame
    invalid_negatives: int

    def texts(self) -> list[str]:
        """Every distinct text, longest first (ties in text order): the order they are encoded."""
        found = pl.concat(
            [
                frame.select(pl.col(column).alias("text"))
                for frame in (self.items, self.negatives)
                for column in ("text", "visual", "attributes")
            ]
        ).drop_nulls()
        unique = found.unique().with_columns(pl.col("text").str.len_chars().alias("length"))
        return unique.sort(["length", "text"], descending=[True, False])["text"].to_list()


def attribute_rows(attributes: pl.DataFrame) -> dict[int, list[AttributeRow]]:
    """item_idx -> its key attributes' (modality, name, value) rows, from an attributes
    table: what its attribute text holds."""
    rows: dict[int, list[AttributeRow]] = {}
    for item_idx, modality, name, value in (
        attributes.filter(pl.col("is_key")).select("item_idx", "modality", "name", "value")
    ).iter_rows():
        rows.setdefault(item_idx, []).append((modality, name, value))
    return rows


def item_texts(
    items: pl.DataFrame, descriptions: pl.DataFrame, attributes: pl.DataFrame | None
) -> pl.DataFrame:
    """(item_idx, text, visual, attributes, image_uri) by item_idx: an ingest `items` frame with
    each item's text, the visual description the attributes stage wrote for its image (or null)
    and the text of its attributes (null without any, or without `attributes`)."""
    visual = descriptions.filter(
        (pl.col("modality") == "image") & pl.col("text").is_not_null()
    ).select("item_idx", pl.col("text").alias("visual"))
    rows = attribute_rows(attributes) if attributes is not None else {}
    texts = pl.DataFrame(
        [
            (item.item_idx, item.text(), attribute_text(rows.get(item.item_idx, ())))
            for item in item_inputs(items)
        ],
        schema={"item_idx": pl.Int32, "text": pl.String, "attributes": pl.String},
        orient="row",
    )
    return (
        texts.join(visual, on="item_idx", how="left")
        .join(items.select("item_idx", "image_uri"), on="item_idx", how="left")
        .select("item_idx", "text", "visual", "attributes", "image_uri")
        .sort("item_idx")
    )


def negative_attribute_texts(
    negatives: pl.DataFrame, rows: dict[int, list[AttributeRow]]
) -> list[str | None]:
    """Each negative's attribute text: its positive's key attributes with its interventions."""
    return [
        attribute_text(
            changed(
                rows.get(item_idx, ()),
                [(c["modality"], c["name"], c["to_value"]) for c in interventions],
            )
        )
        for item_idx, interventions in negatives.select("item_idx", "interventions").iter_rows()
    ]


def embedding_inputs(
    items: pl.DataFrame,
    descriptions: pl.DataFrame,
    negatives: pl.DataFrame,
    attributes: pl.DataFrame | None,
) -> Inputs:
    """The items' texts and the valid negatives, with their attribute texts where `attributes`
    (the attributes table) is given; a `ValueError` when a valid negative has no text."""
    valid = negatives.filter(pl.col("status") == "valid")
    missing = valid.filter(pl.col("text").is_null())
    if missing.height:
        raise ValueError(
            f"{missing.height} valid negatives have no text "
            f"(first: {missing['negative_id'][0]}); rebuild the negatives stage"
        )
    texts = (
        negative_attribute_texts(valid, attribute_rows(attributes))
        if attributes is not None
        else [None] * valid.height
    )
    return Inputs(
        items=item_texts(items, descriptions, attributes),
        negatives=valid.select(
            "negative_id",
            "item_idx",
            "user_idx",
            "kind",
            "modality",
            "text",
            pl.col("visual_description").alias("visual"),
            pl.Series("attributes", texts, dtype=pl.String),
            "possible_false_negative",
        ),
        invalid_negatives=negatives.height - valid.height,
    )


class ModalVectors(NamedTuple):
    """Vectors of rows (items or negatives), each (rows, dim) but the `has_` masks (rows,)."""

    text: np.ndarray
    visual: np.ndarray  # zero where a row has no visual description
    has_visual: np.ndarray
    attributes: np.ndarray  # zero where a row has no attribute text
    has_attributes: np.ndarray
    joint: np.ndarray  # text + visual + attributes, unit length


def modal_vectors(
    rows: pl.DataFrame, lookup: Mapping[str, int], vectors: np.ndarray
) -> ModalVectors:
    """The vectors of `rows` (text, visual, attributes: its texts, null where it has none),
    looked up by `text_key` in the rows of `vectors`."""

    def looked_up(texts: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray]:
        present = np.array([t is not None for t in texts], dtype=bool)
        found = np.zeros((len(texts), vectors.shape[1]), np.float32)
        at = [lookup[text_key(t)] for t in texts if t is not None]
        if at:
            found[present] = vectors[np.array(at, dtype=np.int64)]
        return found, present

    text, _ = looked_up(rows["text"].to_list())
    visual, has_visual = looked_up(rows["visual"].to_list())
    attributes, has_attributes = looked_up(rows["attributes"].to_list())
    return ModalVectors(
        text, visual, has_visual, attributes, has_attributes, joint(text, visual, attributes)
    )


def items_are_dense(items: pl.DataFrame) -> bool:
    """Whether the items' item_idx are 0..n-1 in order, so that item_idx is a matrix row."""
    return bool(np.array_equal(items["item_idx"].to_numpy(), np.arange(items.height)))


def positive_rows(negatives: pl.DataFrame) -> np.ndarray:
    """The row of each negative's positive in the items' matrices."""
    rows: np.ndarray = negatives["item_idx"].to_numpy().astype(np.int64)
    return rows


@dataclass(frozen=True)
class NegativeScores:
    """Per negative: similarity to its positive, its nearest other real item (-1 where none)
    and their similarity, and the flags drawn from them."""

    to_positive: np.ndarray
    nearest: np.ndarray
    similarity: np.ndarray
    near_duplicate: np.ndarray  # a real item other than its positive is at least this close
    possible_false_negative: np.ndarray  # near duplicate, or flagged by the negatives stage


def score_negatives(
    negatives: pl.DataFrame,
    joint: np.ndarray,
    item_joint: np.ndarray,
    nearest: np.ndarray,
    similarity: np.ndarray,
    threshold: float,
) -> NegativeScores:
    """The scores of `negatives` (joint vectors `joint`), given their nearest other items and
    those items' similarity; near duplicates at `threshold` or above."""
    to_positive = (joint * item_joint[positive_rows(negatives)]).sum(axis=1)
    near_duplicate = similarity >= threshold
    flagged = negatives["possible_false_negative"].to_numpy() | near_duplicate
    return NegativeScores(to_positive, nearest, similarity, near_duplicate, flagged)


def quantiles(values: np.ndarray) -> dict[str, float]:
    """min, p10, p50, p90, p99 and max, to 4 places; empty for no values."""
    if not len(values):
        return {}
    points = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 0.99, 1.0])
    names = ("min", "p10", "p50", "p90", "p99", "max")
    return {name: round(float(v), 4) for name, v in zip(names, points, strict=True)}


def coverage_report(
    inputs: Inputs,
    items: ModalVectors,
    has_image: np.ndarray,
    image_failures: Mapping[str, str],
    scores: NegativeScores,
) -> dict[str, Any]:
    """The report's counts of what was embedded, and the negatives' flags and similarities."""
    found = scores.nearest >= 0
    return {
        "items": inputs.items.height,
        "coverage": {
            "text": inputs.items.height,
            "visual_description": int(items.has_visual.sum()),
            "attribute_text": int(items.has_attributes.sum()),
            "image_features": int(has_image.sum()),
            "without_image": int(inputs.items["image_uri"].is_null().sum()),
        },
        "image_failures": dict(image_failures),
        "negatives_embedded": inputs.negatives.height,
        "controls_embedded": int((inputs.negatives["kind"] == "control").sum()),
        "negatives_invalid_not_embedded": inputs.invalid_negatives,
        "near_duplicates": int(scores.near_duplicate.sum()),
        "possible_false_negatives": int(scores.possible_false_negative.sum()),
        "similarity_to_positive": quantiles(scores.to_positive),
        "nearest_other_similarity": quantiles(scores.similarity[found]),
    }
