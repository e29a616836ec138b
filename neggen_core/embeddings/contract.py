"""What the embeddings stage promises: its tables (vector widths set by the encoder), the FAISS
index file, what its version depends on, and the readers training and evaluation use."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from neggen_core.artifacts.schemas import (
    item_embeddings_schema,
    negative_embeddings_schema,
    text_vectors_schema,
)
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.config import NeggenConfig
from neggen_core.encoders.cached import ATTRIBUTE_TEXT_VERSION
from neggen_core.encoders.image import IMAGE_FEATURE_DIM
from neggen_core.encoders.index import ItemIndex
from neggen_core.encoders.text import model_fingerprint

UPSTREAM = ("ingest", "attributes", "negatives")
SCHEMA_VERSION = 3  # 3: attribute_vector
EMBEDDER_VERSION = 2  # bump when what is embedded, or how, changes (2: attribute texts)
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
    settings = config.embeddings.model_dump(exclude={"vector_cache", "device"})
    settings["encoder"] = model_fingerprint(config.embeddings.encoder)
    texts = {"attribute_text_version": ATTRIBUTE_TEXT_VERSION} if settings["attribute_text"] else {}
    return {"embeddings": settings, "embedder_version": EMBEDDER_VERSION, **texts}


def read_embeddings(store: ArtifactStore, ref: ArtifactRef, table: str) -> pa.Table:
    """`item_embeddings`, `negative_embeddings` or `text_vectors` of a built artifact."""
    dim = store.manifest(ref.stage, ref.version).info["dim"]
    return store.read_table(ref, table, tables(dim)[table])


def load_index(store: ArtifactStore, ref: ArtifactRef) -> ItemIndex:
    """The FAISS index over the items' joint vectors: top-k real items nearest to a vector."""
    return ItemIndex.from_bytes(store.read_bytes(ref, INDEX_FILE), f"{ref.uri}/{INDEX_FILE}")
