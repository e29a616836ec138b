"""Vectors as Arrow fixed-size lists: the columns of embeddings tables and the vector cache."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa


def vectors_of(column: pa.ChunkedArray | pa.Array | pl.Series) -> np.ndarray:
    """A fixed-size-list column as a (rows, dim) float32 matrix, without Python loops. Nulls
    must be filtered out first."""
    if isinstance(column, pl.Series):
        column = column.to_arrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if column.null_count:
        raise ValueError("the column has null vectors; filter them out first")
    width = column.type.list_size
    values = column.flatten().to_numpy(zero_copy_only=False)
    matrix: np.ndarray = values.reshape(-1, width).astype(np.float32, copy=False)
    return matrix


def vector_array(matrix: np.ndarray, present: np.ndarray | None = None) -> pa.FixedSizeListArray:
    """Rows of `matrix` as a fixed-size-list array; rows where `present` is false are null."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    values = pa.array(matrix.reshape(-1))
    mask = None if present is None else pa.array(~present)
    return pa.FixedSizeListArray.from_arrays(values, matrix.shape[1], mask=mask)
