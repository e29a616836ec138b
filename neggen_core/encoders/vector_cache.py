"""Text vectors kept across artifact versions: a text encoded once is not encoded again.

A cache is a folder of Parquet parts of (text_sha256, vector), one folder per encoder identity
(model weights, backend, sequence length, how texts become vectors), shared by every embeddings
version of a dataset: a new negatives round encodes only the texts it has not seen. A part is
written under a temporary name and renamed, so a killed run leaves whole parts or none; a part
that does not read is removed, with a warning, and its texts are encoded again.

A vector taken from the cache is the one computed when its text was first encoded. Encoding
the same text in another batch agrees with it to float rounding (other padding, other kernel
shapes), so two embeddings artifacts built with different cache histories may differ there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from neggen_core.artifacts.publish import write_file
from neggen_core.artifacts.store import ArtifactStore, uri_of
from neggen_core.artifacts.vectors import vector_array, vectors_of

log = logging.getLogger(__name__)

FOLDER = "vector-cache"
KEY_FILE = "key.json"


class VectorCache:
    """The vectors one encoder identity has produced for a dataset, looked up by text hash."""

    def __init__(self, store: ArtifactStore, identity: dict[str, Any], dim: int) -> None:
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        self.fs = store.fs
        self.folder = store.shared_path(FOLDER, digest)
        self.dim = dim
        self.fs.makedirs(self.folder, exist_ok=True)
        key = posixpath.join(self.folder, KEY_FILE)
        if not self.fs.exists(key):
            write_file(self.fs, key, json.dumps(identity, indent=2, sort_keys=True).encode())
        self._rows: dict[str, int] = {}
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._load()

    def __len__(self) -> int:
        return len(self._rows)

    def _load(self) -> None:
        """Every part's vectors, in part-name order (the first vector of a text wins)."""
        blocks, keys = [], []
        for path in sorted(self.fs.glob(posixpath.join(self.folder, "part-*.parquet"))):
            try:
                with self.fs.open(path, "rb") as handle:
                    table = pq.read_table(handle)
            except (OSError, pa.ArrowInvalid) as exc:
                log.warning("removed %s, a vector-cache part that does not read (%s)", path, exc)
                self.fs.rm(path)
                continue
            blocks.append(vectors_of(table.column("vector")))
            keys.extend(table.column("text_sha256").to_pylist())
        if not blocks:
            return
        self._vectors = np.concatenate(blocks)
        for row, key in enumerate(keys):
            self._rows.setdefault(key, row)

    def get(self, keys: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        """The vectors of `keys` (zero rows where absent) and the positions of those absent."""
        out = np.zeros((len(keys), self.dim), dtype=np.float32)
        missing = []
        for position, key in enumerate(keys):
            row = self._rows.get(key)
            if row is None:
                missing.append(position)
            else:
                out[position] = self._vectors[row]
        return out, missing

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Keep new vectors: one part, written whole or not at all."""
        if not keys:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        table = pa.table(
            {"text_sha256": pa.array(list(keys), pa.string()), "vector": vector_array(vectors)}
        )
        name = f"part-{uuid.uuid4().hex}.parquet"

        def parquet(tmp: str) -> None:
            with self.fs.open(tmp, "wb") as handle:
                pq.write_table(table, handle)

        write_file(self.fs, posixpath.join(self.folder, name), parquet)
        start = len(self._vectors)
        self._vectors = np.concatenate([self._vectors, vectors])
        for offset, key in enumerate(keys):
            self._rows.setdefault(key, start + offset)

    @property
    def uri(self) -> str:
        return uri_of(self.fs, self.folder)
