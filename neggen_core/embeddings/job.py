"""The embeddings stage: items and their generated negatives as vectors of one text space, Pillow
image features where an item has an image, and a FAISS index over the items.

An item is embedded through its text (title, brand, categories, description), its visual
description and the text of its key attributes (`embeddings.attribute_text`); a negative
through its own three texts, so that a negative differs from its positive only where it was
intervened. Every distinct text is encoded once: the texts are sorted by length
(as sentence-transformers does inside one `encode` call) and cut into parts of
`embeddings.batch_size`, each a part file of `text_vectors`, so a killed run encodes only the
missing parts, and separate shards can encode different parts (`neggen_core.sharding`). The
item and negative tables are assembled from those vectors at the end, with each negative's
nearest real item other than its positive: at `near_duplicate_threshold` or above, it is flagged
as a possible false negative (a real item much like it exists, and a user may want it).
This module is the stage's I/O, the encoder and the index; the logic on frames and matrices is
in `compute.py`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from neggen_core import progress
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.artifacts.vectors import vector_array, vectors_of
from neggen_core.attributes.contract import read_attributes, read_descriptions
from neggen_core.config import NeggenConfig
from neggen_core.embeddings import compute
from neggen_core.embeddings.compute import Inputs, embedding_inputs
from neggen_core.embeddings.contract import (
    INDEX_FILE,
    REPORT,
    SCHEMA_VERSION,
    TABLES,
    UPSTREAM,
    tables,
    version_config,
)
from neggen_core.encoders.cached import CachedEncoder, text_key
from neggen_core.encoders.image import IMAGE_FEATURE_DIM, image_features
from neggen_core.encoders.index import IndexSettings, ItemIndex
from neggen_core.errors import ArtifactError
from neggen_core.images import ImagePolicy, ImageRefused
from neggen_core.ingest.contract import image_policy, read_items
from neggen_core.negatives.contract import read_negatives
from neggen_core.pipeline.spec import StageSpec
from neggen_core.sharding import Stats, still_to_do


def gather_inputs(
    store: ArtifactStore, upstream: Mapping[str, ArtifactRef], attribute_text: bool
) -> Inputs:
    """What the embeddings stage encodes, read from its upstream artifacts (the attribute
    texts where `attribute_text`)."""
    items = read_items(store, upstream["ingest"])
    descriptions = read_descriptions(store, upstream["attributes"])
    attributes = read_attributes(store, upstream["attributes"]) if attribute_text else None
    negatives = read_negatives(store, upstream["negatives"])
    try:
        return embedding_inputs(items, descriptions, negatives, attributes)
    except ValueError as exc:
        raise ArtifactError(f"{upstream['negatives'].uri}: {exc}") from exc


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


class EmbeddingsJob:
    """Every distinct text encoded in batches of `embeddings.batch_size`, then the item and
    negative tables, the index and the near-duplicate flags."""

    marker = "text_vectors"

    def __init__(
        self, config: NeggenConfig, store: ArtifactStore, upstream: Mapping[str, ArtifactRef]
    ) -> None:
        self.config, self.store = config, store
        self.settings = config.embeddings
        self.upstream = dict(upstream)
        self.inputs = gather_inputs(store, upstream, self.settings.attribute_text)
        self.texts = self.inputs.texts()
        self.batches = -(-max(len(self.texts), 1) // self.settings.batch_size)

    @cached_property
    def encoder(self) -> CachedEncoder:
        return CachedEncoder(self.settings, self.store)

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
            vectors, fresh = self.encoder.vectors(chunk, keys)
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
        settings, encoder, upstream = self.settings, self.encoder.encoder, self.upstream
        self._set_schemas(writer)
        written = pa.concat_tables(
            [writer.read_part("text_vectors", part) for part in writer.parts("text_vectors")]
        )
        vectors = vectors_of(written.column("vector"))
        lookup = {key: row for row, key in enumerate(written.column("text_sha256").to_pylist())}

        items = self.inputs.items
        if not compute.items_are_dense(items):
            raise ArtifactError(f"{upstream['ingest'].uri}: item_idx is not dense 0..n-1")
        item = compute.modal_vectors(items, lookup, vectors)
        images = image_policy(self.config, self.store)
        features, has_image, image_failures = _image_features(
            items, settings.image_features, images
        )
        writer.write_table(
            "item_embeddings",
            pa.table(
                {
                    "item_idx": items["item_idx"].to_arrow(),
                    "text_vector": vector_array(item.text),
                    "visual_vector": vector_array(item.visual, item.has_visual),
                    "attribute_vector": vector_array(item.attributes, item.has_attributes),
                    "vector": vector_array(item.joint),
                    "image_features": vector_array(features, has_image),
                }
            ),
        )

        index = ItemIndex.build(
            item.joint,
            IndexSettings(
                exact_max_items=settings.exact_index_max_items,
                hnsw_m=settings.hnsw_m,
                hnsw_ef_search=settings.hnsw_ef_search,
            ),
        )
        writer.write_bytes(INDEX_FILE, index.to_bytes())

        negatives = self.inputs.negatives
        negative = compute.modal_vectors(negatives, lookup, vectors)
        nearest, similarity = index.nearest_other(negative.joint, compute.positive_rows(negatives))
        scores = compute.score_negatives(
            negatives,
            negative.joint,
            item.joint,
            nearest,
            similarity,
            settings.near_duplicate_threshold,
        )
        writer.write_table(
            "negative_embeddings",
            pa.table(
                {
                    "negative_id": negatives["negative_id"].to_arrow(),
                    "item_idx": negatives["item_idx"].to_arrow(),
                    "user_idx": negatives["user_idx"].to_arrow(),
                    "kind": negatives["kind"].to_arrow(),
                    "modality": negatives["modality"].to_arrow(),
                    "text_vector": vector_array(negative.text),
                    "visual_vector": vector_array(negative.visual, negative.has_visual),
                    "attribute_vector": vector_array(negative.attributes, negative.has_attributes),
                    "vector": vector_array(negative.joint),
                    "similarity_to_positive": pa.array(scores.to_positive, pa.float32()),
                    "nearest_item_idx": pa.array(nearest, pa.int32(), mask=nearest < 0),
                    "nearest_similarity": pa.array(similarity, pa.float32(), mask=nearest < 0),
                    "near_duplicate": pa.array(scores.near_duplicate),
                    "possible_false_negative": pa.array(scores.possible_false_negative),
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
            **compute.coverage_report(self.inputs, item, has_image, image_failures, scores),
            "unique_texts": len(self.texts),
            "texts_encoded_this_attempt": int(stats.get("texts_encoded", 0)),
            "texts_from_cache_this_attempt": int(stats.get("texts_from_cache", 0)),
            "vector_cache": cache.uri if (cache := self.encoder.cache) is not None else None,
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


SPEC = StageSpec("embeddings", UPSTREAM, SCHEMA_VERSION, TABLES, version_config, job=EmbeddingsJob)
