"""Texts to vectors through the dataset's vector cache, and an item's joint vector.

The embeddings stage encodes through `CachedEncoder` (a text encoded by an earlier version is
not encoded again); the negatives stage measures its candidates with `joint_vectors`, batch by
batch and without the cache, so that its decisions never depend on another run's encodings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from neggen_core.artifacts.store import ArtifactStore
from neggen_core.config import EmbeddingsConfig
from neggen_core.encoders.text import TextEncoder
from neggen_core.encoders.vector_cache import VectorCache

CACHE_VERSION = 1  # bump when how a text becomes its cached vector changes


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero), as float32."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    normalised: np.ndarray = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalised


def joint(text: np.ndarray, visual: np.ndarray) -> np.ndarray:
    """An item's joint vector: its text vector plus its visual description's (zero rows where it
    has none), unit length. Similarities to a positive are taken between joint vectors."""
    return normalise(text + visual)


class CachedEncoder:
    """The configured text encoder behind the dataset's vector cache (none when
    `embeddings.vector_cache` is off)."""

    def __init__(self, settings: EmbeddingsConfig, store: ArtifactStore) -> None:
        self.encoder = TextEncoder(
            settings.encoder, settings.encode_batch_size, settings.encoder_backend, settings.device
        )
        self.cache = (
            VectorCache(store, self.identity, self.encoder.dim) if settings.vector_cache else None
        )

    @property
    def identity(self) -> dict[str, Any]:
        return {**self.encoder.identity, "embedder_version": CACHE_VERSION}

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def vectors(
        self, texts: Sequence[str], keys: Sequence[str] | None = None
    ) -> tuple[np.ndarray, int]:
        """The texts' vectors, from the cache where it has them, encoded (and kept) where not;
        and how many were encoded. `keys`: the texts' `text_key`s, when already computed."""
        keys = [text_key(t) for t in texts] if keys is None else keys
        if self.cache is None:
            return self.encoder.encode(texts), len(texts)
        vectors, missing = self.cache.get(keys)
        if missing:
            fresh = self.encoder.encode([texts[i] for i in missing])
            vectors[missing] = fresh
            self.cache.put([keys[i] for i in missing], fresh)
        return vectors, len(missing)


def joint_vectors(
    encoder: TextEncoder, rows: Sequence[tuple[str, str | None]], known: dict[str, np.ndarray]
) -> tuple[np.ndarray, int]:
    """The joint vector of each (text, visual description or None) row; and how many texts
    were encoded. Texts not in `known` are encoded together and added to it. Nothing is read
    from or written to a vector cache: a text's vector then depends only on the calls made
    with the same `known` (one batch of a stage), never on what another shard or run encoded
    first, so a rebuild, sharded or not, gives the same bits."""
    fresh = sorted({t for row in rows for t in row if t is not None} - known.keys())
    if fresh:
        known.update(zip(fresh, encoder.encode(fresh), strict=True))
    text = np.zeros((len(rows), encoder.dim), np.float32)
    visual = np.zeros((len(rows), encoder.dim), np.float32)
    for r, (t, v) in enumerate(rows):
        text[r] = known[t]
        if v is not None:
            visual[r] = known[v]
    return joint(text, visual), len(fresh)
