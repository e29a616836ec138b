"""A FAISS inner-product index over item vectors (L2-normalised, so scores are cosines).

Exact (`IndexFlatIP`) up to `exact_max_items` items; HNSW past that. Row r of the index is item
r: the items' indices are dense, so no id map is needed. The HNSW graph is built on one thread,
so that a rebuilt index is byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from neggen_core.errors import ArtifactError


@dataclass(frozen=True)
class IndexSettings:
    exact_max_items: int = 100_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128


@dataclass
class ItemIndex:
    """Top-k real items nearest to any vector of the items' space."""

    index: faiss.Index

    @property
    def kind(self) -> str:
        return "hnsw" if isinstance(self.index, faiss.IndexHNSW) else "exact"

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, vectors: np.ndarray, settings: IndexSettings) -> ItemIndex:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        if len(vectors) <= settings.exact_max_items:
            index: faiss.Index = faiss.IndexFlatIP(dim)
            index.add(vectors)
            return cls(index)
        hnsw = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = settings.hnsw_ef_construction
        hnsw.hnsw.efSearch = settings.hnsw_ef_search
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            hnsw.add(vectors)
        finally:
            faiss.omp_set_num_threads(threads)
        return cls(hnsw)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item_idx), both (queries, k), best first; item_idx -1 where fewer exist."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.index.d:
            raise ValueError(f"queries must be (n, {self.index.d}), got {queries.shape}")
        scores, rows = self.index.search(queries, min(k, self.size))
        return scores, rows

    def nearest_other(
        self, queries: np.ndarray, exclude: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each query, its nearest item other than `exclude[q]`: (item_idx, score)."""
        scores, rows = self.search(queries, 2)
        if rows.shape[1] < 2:
            return np.full(len(queries), -1, dtype=np.int64), np.full(len(queries), np.nan)
        first_is_excluded = rows[:, 0] == exclude
        pick = np.where(first_is_excluded, 1, 0)
        chosen = np.arange(len(queries))
        return rows[chosen, pick], scores[chosen, pick]

    def to_bytes(self) -> bytes:
        return faiss.serialize_index(self.index).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> ItemIndex:
        try:
            index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise ArtifactError(f"{where}: not a FAISS index ({exc}); rebuild the stage") from exc
        return cls(index)
