"""Texts to vectors through the dataset's vector cache, an item's attributes as a text, an
item's joint vector, and its modalities stacked as the models take them.

The embeddings stage encodes through `CachedEncoder` (a text encoded by an earlier version is
not encoded again); the negatives stage measures its candidates with `stacked_vectors`, batch by
batch and without the cache, so that its decisions never depend on another run's encodings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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


AttributeRow = tuple[str, str, str]  # (modality, name, value)
# what an attribute text holds: bump when that changes (2: the key attributes only)
ATTRIBUTE_TEXT_VERSION = 2


def attribute_text(attributes: Iterable[AttributeRow]) -> str | None:
    """An item's key attributes as one text, its attributes modality: "name: value" each
    ("image name: value" for what its image shows), sorted, joined by "; "; None without any.
    One changed value in a long description barely moves the description's vector; in this
    short text of the few features that decide a choice it is one phrase of two or three, so a
    key feature changed is a change the model can see (with every attribute listed, "size:
    medium" to "large" left a cosine of 0.996). A control's changes, to attributes that are not
    key, leave it as it was."""
    parts = sorted({f"{'image ' if m == 'image' else ''}{n}: {v}" for m, n, v in attributes})
    return "; ".join(parts) if parts else None


def changed(
    attributes: Iterable[AttributeRow], interventions: Iterable[AttributeRow]
) -> list[AttributeRow]:
    """A negative's attributes: its positive's, each intervened (modality, name) at its new
    value; an intervention on an attribute not among them leaves them as they are."""
    new = {(m, n): v for m, n, v in interventions}
    return [(m, n, new.get((m, n), v)) for m, n, v in attributes]


def joint(text: np.ndarray, visual: np.ndarray, attributes: np.ndarray) -> np.ndarray:
    """An item's joint vector: the sum of its text's, its visual description's and its
    attributes' vectors (zero rows where it has none of the latter two), unit length: what
    the FAISS index holds and the embeddings report's similarities compare (the near-copy
    check compares `stacked_vectors`)."""
    return normalise(text + visual + attributes)


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


def stacked_vectors(
    encoder: TextEncoder,
    rows: Sequence[tuple[str, str | None, str | None]],
    known: dict[str, np.ndarray],
) -> tuple[np.ndarray, int]:
    """Each (text, visual description, attribute text; None where it has none) row's
    modalities side by side, zeros where absent, unit length: the space the models take them
    in (each modality projected on its own), where a cosine is the mean of the modalities'
    cosines (between rows with the same modalities); and how many texts were encoded. Texts not
    in `known` are encoded together and added to it. Nothing is read from or written to a
    vector cache: a text's vector then depends only on the calls made with the same `known`
    (one batch of a stage), never on what another shard or run encoded first, so a rebuild,
    sharded or not, gives the same bits."""
    fresh = sorted({t for row in rows for t in row if t is not None} - known.keys())
    if fresh:
        known.update(zip(fresh, encoder.encode(fresh), strict=True))
    modal = np.zeros((len(rows), 3, encoder.dim), np.float32)
    for r, row in enumerate(rows):
        for m, t in enumerate(row):
            if t is not None:
                modal[r, m] = known[t]
    return normalise(modal.reshape(len(rows), -1)), len(fresh)
