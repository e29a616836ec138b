"""The schema of record of every artifact table, checked on write and on read."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from neggen_core.errors import SchemaError


def _field(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable)


USERS = pa.schema(
    [
        _field("user_idx", pa.int32(), nullable=False),
        _field("user_id", pa.string(), nullable=False),
        _field("n_train", pa.int32(), nullable=False),
        _field("n_valid", pa.int32(), nullable=False),
        _field("n_test", pa.int32(), nullable=False),
    ]
)

ITEMS = pa.schema(
    [
        _field("item_idx", pa.int32(), nullable=False),
        _field("item_id", pa.string(), nullable=False),
        _field("title", pa.string()),
        _field("description", pa.string()),
        _field("brand", pa.string()),
        _field("categories", pa.list_(pa.string()), nullable=False),
        _field("price", pa.float64()),
        _field("image_uri", pa.string()),
    ]
)

INTERACTIONS = pa.schema(
    [
        _field("user_idx", pa.int32(), nullable=False),
        _field("item_idx", pa.int32(), nullable=False),
        _field("rating", pa.float32()),
        _field("timestamp", pa.int64()),
        _field("split", pa.string(), nullable=False),
    ]
)

QUARANTINE = pa.schema(
    [
        _field("source_file", pa.string(), nullable=False),
        _field("line", pa.int64()),
        _field("record", pa.string(), nullable=False),
        _field("reason", pa.string(), nullable=False),
        _field("action", pa.string(), nullable=False),
    ]
)

ATTRIBUTES = pa.schema(
    [
        _field("item_idx", pa.int32(), nullable=False),
        _field("modality", pa.string(), nullable=False),
        _field("name", pa.string(), nullable=False),
        _field("value", pa.string(), nullable=False),
        _field("is_key", pa.bool_(), nullable=False),
        _field("source", pa.string(), nullable=False),
        _field("prompt_version", pa.string(), nullable=False),
    ]
)

DESCRIPTIONS = pa.schema(
    [
        _field("item_idx", pa.int32(), nullable=False),
        _field("modality", pa.string(), nullable=False),
        _field("text", pa.string()),
        _field("status", pa.string(), nullable=False),
        _field("reason", pa.string()),
        _field("source", pa.string(), nullable=False),
        _field("prompt_version", pa.string(), nullable=False),
    ]
)

KEY_FEATURES = pa.schema(
    [
        _field("category", pa.string(), nullable=False),
        _field("modality", pa.string(), nullable=False),
        _field("name", pa.string(), nullable=False),
        _field("rank", pa.int32(), nullable=False),
        _field("lift", pa.float64()),
        _field("coverage", pa.float64()),
        _field("score", pa.float64()),
        _field("users", pa.int64()),
        _field("support", pa.int64()),
        _field("source", pa.string(), nullable=False),
    ]
)

INTERVENTION = pa.struct(
    [
        pa.field("modality", pa.string(), nullable=False),
        pa.field("name", pa.string(), nullable=False),
        pa.field("from_value", pa.string(), nullable=False),
        pa.field("to_value", pa.string(), nullable=False),
    ]
)

NEGATIVES = pa.schema(
    [
        _field("negative_id", pa.string(), nullable=False),
        _field("item_idx", pa.int32(), nullable=False),
        _field("user_idx", pa.int32()),
        _field("kind", pa.string(), nullable=False),
        _field("modality", pa.string(), nullable=False),
        _field("interventions", pa.list_(INTERVENTION), nullable=False),
        _field("text", pa.string()),
        _field("visual_description", pa.string()),
        _field("status", pa.string(), nullable=False),
        _field("reason", pa.string()),
        _field("possible_false_negative", pa.bool_(), nullable=False),
        _field("cosine_to_positive", pa.float32()),
        _field("round", pa.int32(), nullable=False),
        _field("backend", pa.string(), nullable=False),
        _field("prompt_version", pa.string(), nullable=False),
    ]
)

TRAINING_LOG = pa.schema(
    [
        _field("epoch", pa.int32(), nullable=False),
        _field("loss", pa.float64(), nullable=False),
        _field("bpr_loss", pa.float64()),
        _field("generated_loss", pa.float64()),
        _field("alignment_loss", pa.float64()),
        _field("reg_loss", pa.float64()),
        _field("generated_fallback_share", pa.float64()),
        _field("valid_recall_20", pa.float64(), nullable=False),
        _field("valid_ndcg_20", pa.float64(), nullable=False),
        _field("train_seconds", pa.float64(), nullable=False),
        _field("eval_seconds", pa.float64(), nullable=False),
        _field("improved", pa.bool_(), nullable=False),
    ]
)

METRICS = pa.schema(
    [
        _field("method", pa.string(), nullable=False),
        _field("split", pa.string(), nullable=False),
        _field("metric", pa.string(), nullable=False),
        _field("k", pa.int32(), nullable=False),
        _field("value", pa.float64(), nullable=False),
    ]
)

USER_METRICS = pa.schema(
    [
        _field("user_idx", pa.int32(), nullable=False),
        _field("split", pa.string(), nullable=False),
        _field("metric", pa.string(), nullable=False),
        _field("k", pa.int32(), nullable=False),
        _field("value", pa.float64(), nullable=False),
    ]
)

RECOMMENDATIONS = pa.schema(
    [
        _field("user_idx", pa.int32(), nullable=False),
        _field("rank", pa.int32(), nullable=False),
        _field("item_idx", pa.int32(), nullable=False),
        _field("score", pa.float32(), nullable=False),
    ]
)


COMPARISON = pa.schema(
    [
        _field("method", pa.string(), nullable=False),
        _field("backbone", pa.string(), nullable=False),
        _field("seed", pa.int32(), nullable=False),
        _field("split", pa.string(), nullable=False),
        _field("metric", pa.string(), nullable=False),
        _field("k", pa.int32(), nullable=False),
        _field("value", pa.float64(), nullable=False),
        _field("best_epoch", pa.int32(), nullable=False),
        _field("train_seconds", pa.float64(), nullable=False),
    ]
)

SUMMARY = pa.schema(
    [
        _field("method", pa.string(), nullable=False),
        _field("backbone", pa.string(), nullable=False),
        _field("split", pa.string(), nullable=False),
        _field("metric", pa.string(), nullable=False),
        _field("k", pa.int32(), nullable=False),
        _field("mean", pa.float64(), nullable=False),
        _field("std", pa.float64(), nullable=False),
        _field("seeds", pa.int32(), nullable=False),
        _field("best_epoch", pa.float64(), nullable=False),
        _field("train_seconds", pa.float64(), nullable=False),
    ]
)

GRID = pa.schema(
    [
        _field("method", pa.string(), nullable=False),
        _field("backbone", pa.string(), nullable=False),
        _field("params", pa.string(), nullable=False),
        _field("valid_recall_20", pa.float64(), nullable=False),
        _field("valid_ndcg_20", pa.float64(), nullable=False),
        _field("best_epoch", pa.int32(), nullable=False),
        _field("chosen", pa.bool_(), nullable=False),
    ]
)

CURVES = pa.schema(
    [
        _field("method", pa.string(), nullable=False),
        _field("backbone", pa.string(), nullable=False),
        _field("seed", pa.int32(), nullable=False),
        _field("epoch", pa.int32(), nullable=False),
        _field("valid_recall_20", pa.float64(), nullable=False),
        _field("loss", pa.float64(), nullable=False),
    ]
)


def vector_type(dim: int) -> pa.DataType:
    return pa.list_(pa.float32(), dim)


def text_vectors_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            _field("text_sha256", pa.string(), nullable=False),
            _field("vector", vector_type(dim), nullable=False),
        ]
    )


def item_embeddings_schema(dim: int, image_dim: int) -> pa.Schema:
    """One row per item: its text's vector, its visual description's (null without an image),
    its attribute text's (null without attributes or where not embedded), their normalised sum
    (`vector`, what the index holds) and Pillow image features (null without an image)."""
    return pa.schema(
        [
            _field("item_idx", pa.int32(), nullable=False),
            _field("text_vector", vector_type(dim), nullable=False),
            _field("visual_vector", vector_type(dim)),
            _field("attribute_vector", vector_type(dim)),
            _field("vector", vector_type(dim), nullable=False),
            _field("image_features", vector_type(image_dim)),
        ]
    )


def negative_embeddings_schema(dim: int) -> pa.Schema:
    """One row per valid negative, vectors as for items, with its nearest real item."""
    return pa.schema(
        [
            _field("negative_id", pa.string(), nullable=False),
            _field("item_idx", pa.int32(), nullable=False),
            _field("user_idx", pa.int32()),
            _field("kind", pa.string(), nullable=False),
            _field("modality", pa.string(), nullable=False),
            _field("text_vector", vector_type(dim), nullable=False),
            _field("visual_vector", vector_type(dim)),
            _field("attribute_vector", vector_type(dim)),
            _field("vector", vector_type(dim), nullable=False),
            _field("similarity_to_positive", pa.float32(), nullable=False),
            _field("nearest_item_idx", pa.int32()),
            _field("nearest_similarity", pa.float32()),
            _field("near_duplicate", pa.bool_(), nullable=False),
            _field("possible_false_negative", pa.bool_(), nullable=False),
        ]
    )


TABLES: dict[str, pa.Schema] = {
    "users": USERS,
    "items": ITEMS,
    "interactions": INTERACTIONS,
    "quarantine": QUARANTINE,
    "attributes": ATTRIBUTES,
    "descriptions": DESCRIPTIONS,
    "key_features": KEY_FEATURES,
    "negatives": NEGATIVES,
}

SPLITS = ("train", "valid", "test")


def schema_fingerprint(schema: pa.Schema) -> str:
    """A short, stable hash of a schema's names, types and nullability."""
    text = ";".join(f"{f.name}:{f.type}:{f.nullable}" for f in schema)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _normalise(type_: pa.DataType) -> pa.DataType:
    """Map the large/view variants that polars produces onto the types of record."""
    if pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return pa.string()
    if pa.types.is_large_binary(type_) or pa.types.is_binary_view(type_):
        return pa.binary()
    if pa.types.is_large_list(type_) or pa.types.is_list_view(type_) or pa.types.is_list(type_):
        return pa.list_(_normalise(type_.value_type))
    if pa.types.is_fixed_size_list(type_):
        return pa.list_(_normalise(type_.value_type), type_.list_size)
    if pa.types.is_struct(type_):
        return pa.struct([pa.field(f.name, _normalise(f.type)) for f in type_])
    if pa.types.is_dictionary(type_):
        return _normalise(type_.value_type)
    return type_


def conform(table: pa.Table, schema: pa.Schema, where: str) -> pa.Table:
    """Check `table` against `schema` and cast it to exactly that schema.

    Columns may come in any order and as large/view variants of the expected types; anything else
    (a missing or extra column, another type, a null in a non-nullable column) is a SchemaError.
    """
    got = set(table.column_names)
    missing = [f"{f.name} ({f.type})" for f in schema if f.name not in got]
    extra = sorted(got - set(schema.names))
    if missing or extra:
        raise SchemaError(
            f"{where}: columns do not match the schema of record"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unexpected: {', '.join(extra)}" if extra else "")
        )
    table = table.select(schema.names)
    for expected in schema:
        column = table.column(expected.name)
        if _normalise(column.type) != _normalise(expected.type):
            raise SchemaError(
                f"{where}: column {expected.name!r} has type {column.type}, "
                f"expected {expected.type}"
            )
        if not expected.nullable and column.null_count:
            raise SchemaError(
                f"{where}: column {expected.name!r} has {column.null_count} nulls "
                "but is declared non-nullable"
            )
    return table.cast(schema)
