"""From raw reviews and metadata to the `users`, `items` and `interactions` tables.

Steps, each counted in the report: parse numbers (bad ones quarantined, the record kept with
the field null), drop records without ids (quarantined), drop exact duplicate user-item pairs
(the earliest kept), iterative k-core, drop users too short to split, dense indices, split.

Split rule, per user in time order (source order when there are no timestamps, and to break
ties): n_test = n_valid = max(1, n // 10), the rest train, the earliest interactions first.
Users with fewer than 3 interactions cannot be split and are dropped. A source that carries its
own split (MMRec's x_label) keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from neggen_core.ingest.formats import LINE, SOURCE, RawSource
from neggen_core.ingest.records import DROPPED, FIELD_NULLED, Quarantine

ORDER = "_order"
ITEM_TEXT: dict[str, pl.DataType] = {
    "title": pl.String(),
    "description": pl.String(),
    "brand": pl.String(),
    "categories": pl.List(pl.String()),
    "price": pl.Float64(),
    "image_uri": pl.String(),
}
MIN_SPLITTABLE = 3

_ENTITIES = {
    "&amp;": "&",
    "&quot;": '"',
    "&#39;": "'",
    "&apos;": "'",
    "&lt;": "<",
    "&gt;": ">",
    "&nbsp;": " ",
}


@dataclass
class IngestResult:
    users: pl.DataFrame
    items: pl.DataFrame
    interactions: pl.DataFrame
    quarantine: pl.DataFrame
    report: dict[str, Any]


def _quarantine_rows(
    frame: pl.DataFrame, fields: list[str], reason: pl.Expr, action: str
) -> pl.DataFrame:
    return frame.select(
        pl.col(SOURCE).alias("source_file"),
        pl.col(LINE).alias("line"),
        pl.struct(fields).struct.json_encode().alias("record"),
        reason.alias("reason"),
        pl.lit(action).alias("action"),
    )


def _parse_number(
    frame: pl.DataFrame,
    column: pl.Expr,
    name: str,
    dtype: pl.DataType,
    fields: list[str],
    quarantine: Quarantine,
) -> tuple[pl.DataFrame, int]:
    """Parse a raw string column into `dtype`; unparsable values are nulled and quarantined."""
    raw = column.str.strip_chars()
    present = raw.is_not_null() & (raw != "")
    integer = raw.cast(pl.Int64, strict=False)
    as_float = raw.cast(pl.Float64, strict=False)
    number = pl.coalesce(integer.cast(pl.Float64), as_float)
    bad = present & (number.is_null() | ~number.is_finite())
    rows = frame.filter(bad)
    reason = pl.format(f"unparsable {name} '{{}}'; record kept with {name} null", raw)
    quarantine.extend(_quarantine_rows(rows, fields, reason, FIELD_NULLED))
    if dtype == pl.Int64():
        number = pl.coalesce(integer, as_float.cast(pl.Int64, strict=False))
    value = pl.when(bad | ~present).then(None).otherwise(number)
    return frame.with_columns(value.cast(dtype).alias(f"{name}_parsed")), rows.height


def _drop_missing_ids(reviews: pl.DataFrame, quarantine: Quarantine) -> pl.DataFrame:
    user, item = pl.col("user_id").str.strip_chars(), pl.col("item_id").str.strip_chars()
    missing_user = user.is_null() | (user == "")
    missing_item = item.is_null() | (item == "")
    bad = reviews.filter(missing_user | missing_item)
    reason = (
        pl.when(missing_user & missing_item)
        .then(pl.lit("missing user id and item id"))
        .when(missing_user)
        .then(pl.lit("missing user id"))
        .otherwise(pl.lit("missing item id"))
    )
    quarantine.extend(
        _quarantine_rows(bad, ["user_id", "item_id", "rating", "timestamp"], reason, DROPPED)
    )
    return reviews.filter(~(missing_user | missing_item)).with_columns(user, item)


def k_core(interactions: pl.DataFrame, k: int) -> tuple[pl.DataFrame, int]:
    """Iteratively keep users and items with at least k interactions; returns the rounds run."""
    rounds = 0
    if k <= 1:
        return interactions, rounds
    while True:
        kept = interactions.filter(
            (pl.len().over("user_id") >= k) & (pl.len().over("item_id") >= k)
        )
        rounds += 1
        if kept.height == interactions.height:
            return kept, rounds
        interactions = kept


def dense_index(ids: pl.Series, name: str) -> pl.DataFrame:
    """Dense 0-based indices for ids, in natural order (numeric when every id is an integer)."""
    unique = ids.unique()
    numeric = unique.cast(pl.Int64, strict=False)
    order = unique.sort() if numeric.null_count() else unique.gather(numeric.arg_sort())
    return (
        pl.DataFrame({ids.name: order})
        .with_row_index(name)
        .with_columns(pl.col(name).cast(pl.Int32))
    )


def split_interactions(interactions: pl.DataFrame, has_timestamps: bool) -> pl.DataFrame:
    """Per user, in time order: n_test = n_valid = max(1, n // 10), the rest train."""
    keys = ["user_idx", "timestamp", ORDER] if has_timestamps else ["user_idx", ORDER]
    ordered = interactions.sort(keys, nulls_last=True)
    position = pl.int_range(pl.len()).over("user_idx")
    n = pl.len().over("user_idx")
    held = pl.max_horizontal(pl.lit(1), n // 10)
    split = (
        pl.when(position >= n - held)
        .then(pl.lit("test"))
        .when(position >= n - 2 * held)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return ordered.with_columns(split.alias("split"))


def _clean_text(column: str) -> pl.Expr:
    text = (
        pl.col(column).str.replace_many(list(_ENTITIES), list(_ENTITIES.values())).str.strip_chars()
    )
    return pl.when(text == "").then(None).otherwise(text).alias(column)


def _prepare_items(
    raw: RawSource, quarantine: Quarantine
) -> tuple[pl.DataFrame | None, dict[str, int]]:
    """Deduplicate metadata (first record wins), parse prices, clean text."""
    counts = {"metadata_records": 0, "duplicate_metadata": 0, "unparsable_prices": 0}
    if raw.items is None:
        return None, counts
    items = raw.items.filter(
        pl.col("item_id").is_not_null() & (pl.col("item_id").str.strip_chars() != "")
    )
    no_id = raw.items.height - items.height
    quarantine.extend(
        _quarantine_rows(
            raw.items.filter(
                pl.col("item_id").is_null() | (pl.col("item_id").str.strip_chars() == "")
            ),
            ["item_id", "title"],
            pl.lit("metadata record without an item id"),
            DROPPED,
        )
    )
    items = items.with_columns(pl.col("item_id").str.strip_chars())
    first = pl.int_range(pl.len()).over("item_id") == 0
    duplicates = items.filter(~first)
    quarantine.extend(
        _quarantine_rows(
            duplicates,
            ["item_id", "title"],
            pl.format(
                "duplicate metadata for item {}; the first record is kept", pl.col("item_id")
            ),
            DROPPED,
        )
    )
    items = items.filter(first)
    price = pl.col("price").str.replace_all(r"[$,\s]", "")
    no_price = price.str.to_lowercase().is_in(["none", "null", "nan"])
    items, bad_prices = _parse_number(
        items,
        pl.when(no_price).then(None).otherwise(price),
        "price",
        pl.Float64(),
        ["item_id", "price"],
        quarantine,
    )
    items = items.with_columns(
        _clean_text("title"),
        _clean_text("description"),
        _clean_text("brand"),
        pl.col("categories").list.eval(pl.element().str.strip_chars()).list.drop_nulls(),
        pl.col("price_parsed").alias("price"),
    )
    counts.update(
        metadata_records=raw.items.height,
        metadata_without_id=no_id,
        duplicate_metadata=duplicates.height,
        unparsable_prices=bad_prices,
    )
    return items, counts


def build_tables(raw: RawSource, k: int, quarantine: Quarantine) -> IngestResult:
    """Clean, filter, index and split a raw source into the ingest tables."""
    steps: list[dict[str, Any]] = []

    def step(name: str, before: pl.DataFrame, after: pl.DataFrame, **extra: Any) -> None:
        steps.append(
            {
                "step": name,
                "rows_in": before.height,
                "rows_out": after.height,
                "dropped": before.height - after.height,
                **extra,
            }
        )

    reviews = raw.reviews.with_row_index(ORDER)
    fields = ["user_id", "item_id", "rating", "timestamp"]
    reviews, bad_ratings = _parse_number(
        reviews, pl.col("rating"), "rating", pl.Float32(), fields, quarantine
    )
    reviews, bad_times = _parse_number(
        reviews, pl.col("timestamp"), "timestamp", pl.Int64(), fields, quarantine
    )
    reviews = reviews.with_columns(
        pl.col("rating_parsed").alias("rating"),
        (pl.col("timestamp_parsed") // raw.timestamp_divisor).alias("timestamp"),
    ).drop("rating_parsed", "timestamp_parsed")

    with_ids = _drop_missing_ids(reviews, quarantine)
    step("missing_ids", reviews, with_ids)

    has_timestamps = with_ids.get_column("timestamp").null_count() < with_ids.height
    order = ["timestamp", ORDER] if has_timestamps else [ORDER]
    unique = with_ids.sort(order, nulls_last=True).unique(
        ["user_id", "item_id"], keep="first", maintain_order=True
    )
    step("duplicates", with_ids, unique)

    cored, rounds = k_core(unique, k)
    step("k_core", unique, cored, k=k, rounds=rounds)

    carries_split = cored.get_column("split").null_count() == 0 and cored.height > 0
    if carries_split:
        splittable = cored
        short_users = 0
    else:
        long_enough = pl.len().over("user_id") >= MIN_SPLITTABLE
        splittable = cored.filter(long_enough)
        short_users = cored.filter(~long_enough).get_column("user_id").n_unique()
    step(
        "too_short_to_split",
        cored,
        splittable,
        users_dropped=short_users,
        min_interactions=MIN_SPLITTABLE,
    )

    user_index = dense_index(splittable.get_column("user_id"), "user_idx")
    item_index = dense_index(splittable.get_column("item_id"), "item_idx")
    indexed = splittable.join(user_index, on="user_id").join(item_index, on="item_id")
    if carries_split:
        keys = ["user_idx", "timestamp", ORDER] if has_timestamps else ["user_idx", ORDER]
        interactions = indexed.sort(keys, nulls_last=True)
    else:
        interactions = split_interactions(indexed.drop("split"), has_timestamps)
    interactions = interactions.select("user_idx", "item_idx", "rating", "timestamp", "split")

    split_counts = interactions.group_by("user_idx").agg(
        *[
            (pl.col("split") == name).sum().cast(pl.Int32).alias(f"n_{name}")
            for name in ("train", "valid", "test")
        ]
    )
    users = (
        user_index.join(split_counts, on="user_idx")
        .select("user_idx", "user_id", "n_train", "n_valid", "n_test")
        .sort("user_idx")
    )

    meta, meta_counts = _prepare_items(raw, quarantine)
    if meta is None:
        meta = pl.DataFrame(schema={"item_id": pl.String()})
    items = item_index.join(
        meta.drop(SOURCE, LINE, strict=False).with_columns(pl.lit(True).alias("_has_meta")),
        on="item_id",
        how="left",
    )
    without_metadata = items.get_column("_has_meta").null_count()
    fill = {c: pl.lit(None, dtype=t) for c, t in ITEM_TEXT.items() if c not in items.columns}
    items = (
        items.with_columns(**fill)
        .with_columns(pl.col("categories").fill_null(pl.lit([], dtype=pl.List(pl.String()))))
        .select("item_idx", "item_id", *ITEM_TEXT)
        .sort("item_idx")
    )

    quarantine_frame = quarantine.frame()
    split_sizes = dict(interactions.group_by("split").len().iter_rows())
    report = {
        "files": [vars(f) for f in raw.files],
        "records_read": raw.reviews.height,
        "unparsable_ratings": bad_ratings,
        "unparsable_timestamps": bad_times,
        "steps": steps,
        "split_source": "source (x_label)"
        if carries_split
        else "rule: n_test = n_valid = max(1, n // 10), in time order",
        "time_order": "timestamp" if has_timestamps else "source order (no timestamps)",
        "users": users.height,
        "items": items.height,
        "interactions": interactions.height,
        "split": {name: int(split_sizes.get(name, 0)) for name in ("train", "valid", "test")},
        "items_without_metadata": without_metadata,
        "items_with_image": items.get_column("image_uri").is_not_null().sum(),
        "metadata": meta_counts,
        "quarantine": {
            "total": quarantine_frame.height,
            "by_action": dict(quarantine_frame.group_by("action").len().iter_rows()),
        },
    }
    return IngestResult(users, items, interactions, quarantine_frame, report)
