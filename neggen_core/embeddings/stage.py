"""The embeddings stage: items and their generated negatives as vectors of one text space, Pillow
image features where an item has an image, and a FAISS index over the items.

An item is embedded through its text (title, brand, categories, description) and its visual
description; a negative through its own two texts, so that a negative differs from its positive
only where it was intervened. Every distinct text is encoded once: the texts are sorted by length
(as sentence-transformers does inside one `encode` call) and cut into parts of
`embeddings.batch_size`, each a part file of `text_vectors`, so a killed run encodes only the
missing parts, and separate shards can encode different parts (`neggen_core.sharding`). The
item and negative tables are assembled from those vectors at the end, with each negative's
nearest real item other than its positive: at `near_duplicate_threshold` or above, it is flagged
as a possible false negative (a real item much like it exists, and a user may want it).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from neggen_core import progress
from neggen_core.artifacts.schemas import (
    DESCRIPTIONS,
    ITEMS,
    NEGATIVES,
    item_embeddings_schema,
    negative_embeddings_schema,
    text_vectors_schema,
)
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.artifacts.vectors import vector_array, vectors_of
from neggen_core.attributes.stage import item_inputs
from neggen_core.config import NeggenConfig
from neggen_core.encoders.image import IMAGE_FEATURE_DIM, image_features
from neggen_core.encoders.index import IndexSettings, ItemIndex
from neggen_core.encoders.text import TextEncoder, model_fingerprint
from neggen_core.encoders.vector_cache import VectorCache
from neggen_core.errors import ArtifactError
from neggen_core.images import ImagePolicy, ImageRefused
from neggen_core.ingest.stage import image_policy
from neggen_core.sharding import Stats, still_to_do

SCHEMA_VERSION = 2
EMBEDDER_VERSION = 1  # bump when what is embedded, or how, changes
INDEX_FILE = "items.faiss"
REPORT = "report.json"


def tables(dim: int) -> dict[str, pa.Schema]:
    return {
        "text_vectors": text_vectors_schema(dim),
        "item_embeddings": item_embeddings_schema(dim, IMAGE_FEATURE_DIM),
        "negative_embeddings": negative_embeddings_schema(dim),
    }


TABLES = tables(384)  # the bundled encoder's width; `build` sets the configured encoder's


def version_config(config: NeggenConfig) -> dict[str, Any]:
    settings = config.embeddings.model_dump(exclude={"vector_cache"})
    settings["encoder"] = model_fingerprint(config.embeddings.encoder)
    return {"embeddings": settings, "embedder_version": EMBEDDER_VERSION}


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Inputs:
    """What is embedded: items (item_idx, text, visual, image_uri) and valid negatives
    (negative_id, item_idx, user_idx, kind, modality, text, visual)."""

    items: pl.DataFrame
    negatives: pl.DataFrame
    invalid_negatives: int

    def texts(self) -> list[str]:
        """Every distinct text, longest first (ties in text order): the order they are encoded."""
        found = pl.concat(
            [
                self.items.select(pl.col("text")),
                self.items.select(pl.col("visual").alias("text")),
                self.negatives.select(pl.col("text")),
                self.negatives.select(pl.col("visual").alias("text")),
            ]
        ).drop_nulls()
        unique = found.unique().with_columns(pl.col("text").str.len_chars().alias("length"))
        return unique.sort(["length", "text"], descending=[True, False])["text"].to_list()


def gather_inputs(store: ArtifactStore, upstream: Mapping[str, ArtifactRef]) -> Inputs:
    items = store.read_frame(upstream["ingest"], "items", ITEMS)
    descriptions = store.read_frame(upstream["attributes"], "descriptions", DESCRIPTIONS)
    visual = descriptions.filter(
        (pl.col("modality") == "image") & pl.col("text").is_not_null()
    ).select("item_idx", pl.col("text").alias("visual"))
    texts = pl.DataFrame(
        [(item.item_idx, item.text()) for item in item_inputs(items)],
        schema={"item_idx": pl.Int32, "text": pl.String},
        orient="row",
    )
    item_frame = (
        texts.join(visual, on="item_idx", how="left")
        .join(items.select("item_idx", "image_uri"), on="item_idx", how="left")
        .sort("item_idx")
    )
    negatives = store.read_frame(upstream["negatives"], "negatives", NEGATIVES)
    valid = negatives.filter(pl.col("status") == "valid")
    missing = valid.filter(pl.col("text").is_null())
    if missing.height:
        raise ArtifactError(
            f"{upstream['negatives'].uri}: {missing.height} valid negatives have no text "
            f"(first: {missing['negative_id'][0]}); rebuild the negatives stage"
        )
    return Inputs(
        items=item_frame,
        negatives=valid.select(
            "negative_id",
            "item_idx",
            "user_idx",
            "kind",
            "modality",
            "text",
            pl.col("visual_description").alias("visual"),
            "possible_false_negative",
        ),
        invalid_negatives=negatives.height - valid.height,
    )


def _normalise(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


def _modal_vectors(
    texts: Sequence[str],
    visuals: Sequence[str | None],
    lookup: Mapping[str, int],
    vectors: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(text vectors, visual vectors, has visual, joint vectors) of rows of texts."""
    text_rows = np.array([lookup[text_key(t)] for t in texts], dtype=np.int64)
    has_visual = np.array([v is not None for v in visuals], dtype=bool)
    visual_rows = np.array(
        [lookup[text_key(v)] if v is not None else 0 for v in visuals], dtype=np.int64
    )
    dim = vectors.shape[1]
    text_vectors = vectors[text_rows] if len(text_rows) else np.zeros((0, dim), np.float32)
    visual_vectors = np.where(
        has_visual[:, None], vectors[visual_rows] if len(visual_rows) else 0.0, 0.0
    ).astype(np.float32)
    joint = _normalise(text_vectors + visual_vectors)
    return text_vectors, visual_vectors, has_visual, joint


def _image_features(
    items: pl.DataFrame, enabled: bool, images: ImagePolicy
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    features = np.zeros((items.height, IMAGE_FEATURE_DIM), dtype=np.float32)
    present = np.zeros(items.height, dtype=bool)
    failures: dict[str, str] = {}
    if not enabled:
        return features, present, failures
    for row, (item_idx, uri) in enumerate(items.select("item_idx", "image_uri").iter_rows()):
        if uri is None:
            continue
        try:
            features[row] = image_features(images.load(uri))
            present[row] = True
        except ImageRefused as exc:
            failures[str(item_idx)] = str(exc)
    return features, present, failures


class Job:
    """Every distinct text encoded in batches of `embeddings.batch_size`, then the item and
    negative tables, the index and the near-duplicate flags."""

    marker = "text_vectors"

    def __init__(
        self, config: NeggenConfig, store: ArtifactStore, upstream: Mapping[str, ArtifactRef]
    ) -> None:
        self.config, self.store = config, store
        self.settings = config.embeddings
        self.upstream = dict(upstream)
        self.inputs = gather_inputs(store, upstream)
        self.texts = self.inputs.texts()
        self.batches = -(-max(len(self.texts), 1) // self.settings.batch_size)

    @cached_property
    def encoder(self) -> TextEncoder:
        return TextEncoder(
            self.settings.encoder, self.settings.encode_batch_size, self.settings.encoder_backend
        )

    @cached_property
    def cache(self) -> VectorCache | None:
        if not self.settings.vector_cache:
            return None
        identity = {**self.encoder.identity, "embedder_version": EMBEDDER_VERSION}
        return VectorCache(self.store, identity, self.encoder.dim)

    def _vectors(self, chunk: list[str], keys: list[str]) -> tuple[np.ndarray, int]:
        """The chunk's vectors: from the cache where it has them, encoded (and kept) where
        not; and how many were encoded."""
        if self.cache is None:
            return self.encoder.encode(chunk), len(chunk)
        vectors, missing = self.cache.get(keys)
        if missing:
            fresh = self.encoder.encode([chunk[i] for i in missing])
            vectors[missing] = fresh
            self.cache.put([keys[i] for i in missing], fresh)
        return vectors, len(missing)

    def _set_schemas(self, writer: ArtifactWriter) -> None:
        for table, schema in tables(self.encoder.dim).items():
            writer.set_schema(table, schema)

    def build(self, writer: ArtifactWriter, numbers: Sequence[int]) -> Stats:
        todo = still_to_do(writer, self.marker, numbers)
        if not todo:
            return {}
        self._set_schemas(writer)
        size, encoded, cached, seconds = self.settings.batch_size, 0, 0, 0.0
        for done, number in enumerate(todo, 1):
            chunk = self.texts[number * size : (number + 1) * size]
            keys = [text_key(t) for t in chunk]
            began = time.perf_counter()
            vectors, fresh = self._vectors(chunk, keys)
            seconds += time.perf_counter() - began
            encoded, cached = encoded + fresh, cached + len(chunk) - fresh
            part = pa.table(
                {"text_sha256": pa.array(keys, pa.string()), "vector": vector_array(vectors)}
            )
            writer.write_table("text_vectors", part, part=number)
            progress.report("embeddings", done, len(todo))
        return {"texts_encoded": encoded, "texts_from_cache": cached, "encode_seconds": seconds}

    def finish(self, writer: ArtifactWriter, stats: Stats) -> dict[str, Any]:
        started = time.perf_counter()
        settings, encoder, upstream = self.settings, self.encoder, self.upstream
        self._set_schemas(writer)
        written = pa.concat_tables(
            [writer.read_part("text_vectors", part) for part in writer.parts("text_vectors")]
        )
        vectors = vectors_of(written.column("vector"))
        lookup = {key: row for row, key in enumerate(written.column("text_sha256").to_pylist())}

        items = self.inputs.items
        if not np.array_equal(items["item_idx"].to_numpy(), np.arange(items.height)):
            raise ArtifactError(f"{upstream['ingest'].uri}: item_idx is not dense 0..n-1")
        item_text, item_visual, item_has_visual, item_joint = _modal_vectors(
            items["text"].to_list(), items["visual"].to_list(), lookup, vectors
        )
        images = image_policy(self.config, self.store)
        features, has_image, image_failures = _image_features(
            items, settings.image_features, images
        )
        writer.write_table(
            "item_embeddings",
            pa.table(
                {
                    "item_idx": items["item_idx"].to_arrow(),
                    "text_vector": vector_array(item_text),
                    "visual_vector": vector_array(item_visual, item_has_visual),
                    "vector": vector_array(item_joint),
                    "image_features": vector_array(features, has_image),
                }
            ),
        )

        index = ItemIndex.build(
            item_joint,
            IndexSettings(
                exact_max_items=settings.exact_index_max_items,
                hnsw_m=settings.hnsw_m,
                hnsw_ef_search=settings.hnsw_ef_search,
            ),
        )
        writer.write_bytes(INDEX_FILE, index.to_bytes())

        negatives = self.inputs.negatives
        neg_text, neg_visual, neg_has_visual, neg_joint = _modal_vectors(
            negatives["text"].to_list(), negatives["visual"].to_list(), lookup, vectors
        )
        positives = negatives["item_idx"].to_numpy().astype(np.int64)
        to_positive = (neg_joint * item_joint[positives]).sum(axis=1)
        nearest, similarity = index.nearest_other(neg_joint, positives)
        near_duplicate = similarity >= settings.near_duplicate_threshold
        possible_false_negative = negatives["possible_false_negative"].to_numpy() | near_duplicate
        writer.write_table(
            "negative_embeddings",
            pa.table(
                {
                    "negative_id": negatives["negative_id"].to_arrow(),
                    "item_idx": negatives["item_idx"].to_arrow(),
                    "user_idx": negatives["user_idx"].to_arrow(),
                    "kind": negatives["kind"].to_arrow(),
                    "modality": negatives["modality"].to_arrow(),
                    "text_vector": vector_array(neg_text),
                    "visual_vector": vector_array(neg_visual, neg_has_visual),
                    "vector": vector_array(neg_joint),
                    "similarity_to_positive": pa.array(to_positive, pa.float32()),
                    "nearest_item_idx": pa.array(nearest, pa.int32(), mask=nearest < 0),
                    "nearest_similarity": pa.array(similarity, pa.float32(), mask=nearest < 0),
                    "near_duplicate": pa.array(near_duplicate),
                    "possible_false_negative": pa.array(possible_false_negative),
                }
            ),
        )
        encode_seconds = stats.get("encode_seconds", 0.0)
        report = {
            "encoder": encoder.name,
            "encoder_backend": encoder.backend,
            "encoder_fallback": encoder.fallback,
            "dim": encoder.dim,
            "image_feature_dim": IMAGE_FEATURE_DIM,
            "index": {"kind": index.kind, "items": index.size, "file": INDEX_FILE},
            "items": items.height,
            "coverage": {
                "text": items.height,
                "visual_description": int(item_has_visual.sum()),
                "image_features": int(has_image.sum()),
                "without_image": int(items["image_uri"].is_null().sum()),
            },
            "image_failures": image_failures,
            "negatives_embedded": negatives.height,
            "controls_embedded": int((negatives["kind"] == "control").sum()),
            "negatives_invalid_not_embedded": self.inputs.invalid_negatives,
            "near_duplicates": int(near_duplicate.sum()),
            "possible_false_negatives": int(possible_false_negative.sum()),
            "similarity_to_positive": _quantiles(to_positive),
            "nearest_other_similarity": _quantiles(similarity[nearest >= 0]),
            "unique_texts": len(self.texts),
            "texts_encoded_this_attempt": int(stats.get("texts_encoded", 0)),
            "texts_from_cache_this_attempt": int(stats.get("texts_from_cache", 0)),
            "vector_cache": self.cache.uri if self.cache is not None else None,
            "encode_seconds_this_attempt": round(encode_seconds, 2),
            "seconds_this_attempt": round(encode_seconds + time.perf_counter() - started, 2),
        }
        writer.write_json(REPORT, report)
        return {
            "encoder": encoder.name,
            "dim": encoder.dim,
            "image_feature_dim": IMAGE_FEATURE_DIM,
            "index": index.kind,
            "items": items.height,
            "negatives": negatives.height,
            "unique_texts": len(self.texts),
            "near_duplicates": report["near_duplicates"],
        }


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {}
    points = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 0.99, 1.0])
    names = ("min", "p10", "p50", "p90", "p99", "max")
    return {name: round(float(v), 4) for name, v in zip(names, points, strict=True)}


def read_embeddings(store: ArtifactStore, ref: ArtifactRef, table: str) -> pa.Table:
    """`item_embeddings`, `negative_embeddings` or `text_vectors` of a built artifact."""
    dim = store.manifest(ref.stage, ref.version).info["dim"]
    return store.read_table(ref, table, tables(dim)[table])


def load_index(store: ArtifactStore, ref: ArtifactRef) -> ItemIndex:
    """The FAISS index over the items' joint vectors: top-k real items nearest to a vector."""
    return ItemIndex.from_bytes(store.read_bytes(ref, INDEX_FILE), f"{ref.uri}/{INDEX_FILE}")
