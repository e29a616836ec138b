"""The ingest stage's logic on frames: from raw reviews and metadata to the `users`, `items`,
`interactions` and `quarantine` tables.

Steps, each counted in the report: parse numbers (bad ones quarantined, the record kept with
the field null), drop records without ids (quarantined), drop exact duplicate user-item pairs
(the earliest kept), iterative k-core, drop users too short to split, dense indices, split.

Split rule, per user in time order (source order when there are no timestamps, and to break
ties): n_test = n_valid = max(1, n // 10), the rest train, the earliest interactions first.
Users with fewer than 3 interactions cannot be split and are dropped. A source that carries its
own split (MMRec's x_label) keeps it.

Dense indices follow the ids' natural order (numeric when every id is an integer), so that
`user_idx` of an index-keyed dataset is its own user index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from neggen_core.artifacts.schemas import SPLITS
from neggen_core.errors import InputFormatError
from neggen_core.ingest.formats import SOURCE
from neggen_core.ingest.literals import DROPPED, FIELD_NULLED, LINE
from neggen_core.ingest.records import FileStats, Quarantine
from neggen_core.redaction import redact

ORDER = "_order"
MIN_SPLITTABLE = 3
LATEST_TIMESTAMP = 4_102_444_800  # 2100-01-01, in seconds
THOUSANDS = r"^\d{1,3}(,\d{3})+(\.\d+)?$"
ITEM_TEXT: dict[str, pl.DataType] = {
    "title": pl.String(),
    "description": pl.String(),
    "brand": pl.String(),
    "categories": pl.List(pl.String()),
    "price": pl.Float64(),
    "image_uri": pl.String(),
}
_ENTITIES = {
    "&amp;": "&",
    "&quot;": '"',
    "&#39;": "'",
    "&apos;": "'",
    "&lt;": "<",
    "&gt;": ">",
    "&nbsp;": " ",
    "&reg;": "\u00ae",
    "&trade;": "\u2122",
    "&copy;": "\u00a9",
}


@dataclass
class IngestResult:
    users: pl.DataFrame
    items: pl.DataFrame
    interactions: pl.DataFrame
    quarantine: pl.DataFrame
    report: dict[str, Any]


@dataclass
class CleanInteractions:
    """Interactions after every filtering step, indexed and split; items not yet attached."""

    interactions: pl.DataFrame
    users: pl.DataFrame
    item_index: pl.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


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


@dataclass(frozen=True)
class Number:
    """How a raw column parses: its type and the range a value must be in (inclusive)."""

    dtype: pl.DataType
    low: float = -float("inf")
    high: float = float("inf")
    meaning: str = ""


def _parse_numbers(
    frame: pl.DataFrame,
    columns: dict[str, Number],
    fields: list[str],
    quarantine: Quarantine,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Parse raw string columns to numbers; a value that does not parse, does not fit its
    type or is out of its range is nulled, and quarantined with the record kept.

    A plain cast parses the usual case; only when some value fails it (padding, "4.0" for an
    integer, junk, out of range) does the full parse run, which strips, retries and flags what
    is left."""

    def in_range(value: pl.Expr, number: Number) -> pl.Expr:
        return value.is_finite() & value.is_between(number.low, number.high)

    plain = {
        name: pl.col(name).cast(pl.Int64 if n.dtype == pl.Int64() else pl.Float64, strict=False)
        for name, n in columns.items()
    }
    failed = frame.select(
        (pl.col(name).is_not_null() & ~in_range(value, columns[name]).fill_null(False))
        .sum()
        .alias(name)
        for name, value in plain.items()
    ).row(0, named=True)
    if not any(failed.values()):
        casts = [value.cast(columns[name].dtype).alias(name) for name, value in plain.items()]
        return frame.with_columns(casts), dict.fromkeys(columns, 0)

    parsed, flags, reasons = [], [], {}
    for name, number in columns.items():
        raw = pl.col(name).str.strip_chars()
        present = raw.is_not_null() & (raw != "")
        integer = raw.cast(pl.Int64, strict=False)
        real = raw.cast(pl.Float64, strict=False)
        value = pl.coalesce(integer.cast(pl.Float64), real)
        if number.dtype == pl.Int64():
            value = pl.coalesce(integer, real.cast(pl.Int64, strict=False)).cast(pl.Float64)
        unparsable = present & real.is_null() & integer.is_null()
        bad = present & ~in_range(value, number).fill_null(False)
        parsed.append(pl.when(bad).then(None).otherwise(value).cast(number.dtype).alias(name))
        flags.append(bad.fill_null(False).alias(f"_bad_{name}"))
        flags.append(unparsable.fill_null(False).alias(f"_unparsable_{name}"))
        reasons[name] = (
            pl.when(pl.col(f"_unparsable_{name}"))
            .then(pl.format(f"unparsable {name} '{{}}'", pl.col(name)))
            .otherwise(pl.format(f"{name} '{{}}' is out of range ({number.meaning})", pl.col(name)))
        )
    flagged = frame.lazy().with_columns(flags).collect()
    counts = {}
    for name in columns:
        rows = flagged.filter(pl.col(f"_bad_{name}"))
        counts[name] = rows.height
        if rows.height:
            reason = pl.format(f"{{}}; record kept with {name} null", reasons[name])
            quarantine.extend(_quarantine_rows(rows, fields, reason, FIELD_NULLED))
    helpers = [c for c in flagged.columns if c.startswith(("_bad_", "_unparsable_"))]
    return flagged.lazy().with_columns(parsed).drop(helpers).collect(), counts


def _drop_missing_ids(reviews: pl.DataFrame, quarantine: Quarantine) -> pl.DataFrame:
    user, item = pl.col("user_id").str.strip_chars(), pl.col("item_id").str.strip_chars()
    missing_user = user.is_null() | (user == "")
    missing_item = item.is_null() | (item == "")
    bad = reviews.filter(missing_user | missing_item)
    if bad.height:
        reason = (
            pl.when(missing_user & missing_item)
            .then(pl.lit("missing user id and item id"))
            .when(missing_user)
            .then(pl.lit("missing user id"))
            .otherwise(pl.lit("missing item id"))
        )
        fields = ["user_id", "item_id", "rating", "timestamp"]
        quarantine.extend(_quarantine_rows(bad, fields, reason, DROPPED))
    return reviews.filter(~(missing_user | missing_item)).with_columns(user, item)


def k_core(
    interactions: pl.DataFrame, k: int, user: str = "user", item: str = "item"
) -> tuple[pl.DataFrame, int]:
    """Iteratively keep users and items with at least k interactions; returns the rounds run."""
    rounds = 0
    if k <= 1:
        return interactions, rounds
    while True:
        kept = interactions.filter((pl.len().over(user) >= k) & (pl.len().over(item) >= k))
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


def split_interactions(ordered: pl.DataFrame) -> pl.DataFrame:
    """Per user, in time order: n_test = n_valid = max(1, n // 10), the rest train.

    `ordered` is sorted by user_idx, then time (source order breaking ties)."""
    users = ordered.get_column("user_idx").to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    position = np.arange(len(users)) - np.repeat(starts, counts)
    n = np.repeat(counts, counts)
    held = np.maximum(1, n // 10)
    code = (position >= n - 2 * held).astype(np.int8) + (position >= n - held)
    split = pl.Series("split", code).replace_strict(dict(enumerate(SPLITS)), return_dtype=pl.String)
    return ordered.with_columns(split)


def clean_interactions(
    reviews: pl.DataFrame, k: int, quarantine: Quarantine, timestamp_divisor: int = 1
) -> CleanInteractions:
    """Parse, filter, deduplicate, k-core, index and split the raw reviews."""
    steps: list[dict[str, Any]] = []

    def step(name: str, before: int, after: int, **extra: Any) -> None:
        steps.append(
            {"step": name, "rows_in": before, "rows_out": after, "dropped": before - after} | extra
        )

    fields = ["user_id", "item_id", "rating", "timestamp"]
    numbers = {
        "rating": Number(pl.Float32()),
        "timestamp": Number(
            pl.Int64(),
            low=0,
            high=LATEST_TIMESTAMP * timestamp_divisor,
            meaning="Unix time between 1970 and 2100",
        ),
    }
    parsed, bad = _parse_numbers(reviews.with_row_index(ORDER), numbers, fields, quarantine)
    parsed = parsed.with_columns(pl.col("timestamp") // timestamp_divisor)
    with_ids = _drop_missing_ids(parsed, quarantine)
    step("missing_ids", parsed.height, with_ids.height)

    # integer codes in natural id order: every later step groups on ints, not strings
    user_index = dense_index(with_ids.get_column("user_id"), "user")
    item_index = dense_index(with_ids.get_column("item_id"), "item")
    coded = with_ids.join(user_index, on="user_id").join(item_index, on="item_id")
    has_timestamps = coded.get_column("timestamp").null_count() < coded.height
    # one sort serves every later step: by user, then time, source order breaking ties
    order = ["user", "timestamp", ORDER] if has_timestamps else ["user", ORDER]
    ordered = coded.sort(order, nulls_last=True)
    unique = ordered.filter(pl.struct("user", "item").is_first_distinct())
    step("duplicates", coded.height, unique.height)

    cored, rounds = k_core(unique, k)
    step("k_core", unique.height, cored.height, k=k, rounds=rounds)

    carries_split = cored.height > 0 and cored.get_column("split").null_count() == 0
    if carries_split:
        splittable, short_users = cored, 0
    else:
        long_enough = pl.len().over("user") >= MIN_SPLITTABLE
        splittable = cored.filter(long_enough)
        short_users = cored.filter(~long_enough).get_column("user").n_unique()
    step(
        "too_short_to_split",
        cored.height,
        splittable.height,
        users_dropped=short_users,
        min_interactions=MIN_SPLITTABLE,
    )

    indexed = splittable.with_columns(
        (pl.col("user").rank("dense") - 1).cast(pl.Int32).alias("user_idx"),
        (pl.col("item").rank("dense") - 1).cast(pl.Int32).alias("item_idx"),
    )
    interactions = indexed if carries_split else split_interactions(indexed.drop("split"))

    users = (
        interactions.group_by("user_idx", "user_id")
        .agg((pl.col("split") == name).sum().cast(pl.Int32).alias(f"n_{name}") for name in SPLITS)
        .sort("user_idx")
        .select("user_idx", "user_id", "n_train", "n_valid", "n_test")
    )
    split_sizes = dict(interactions.group_by("split").len().iter_rows())
    report = {
        "records_read": reviews.height,
        "unparsable_ratings": bad["rating"],
        "unparsable_timestamps": bad["timestamp"],
        "steps": steps,
        "split_source": "source (x_label)"
        if carries_split
        else "rule: n_test = n_valid = max(1, n // 10), in time order",
        "time_order": "timestamp" if has_timestamps else "source order (no timestamps)",
        "users": users.height,
        "interactions": interactions.height,
        "split": {name: int(split_sizes.get(name, 0)) for name in SPLITS},
    }
    return CleanInteractions(
        interactions=interactions.select("user_idx", "item_idx", "rating", "timestamp", "split"),
        users=users,
        item_index=interactions.select("item_idx", "item_id").unique().sort("item_idx"),
        report=report,
    )


def _decoded(text: pl.Expr) -> pl.Expr:
    """HTML entities in scraped text ("Retro Gaming &amp; Microconsoles") decoded, ends stripped."""
    return text.str.replace_many(list(_ENTITIES), list(_ENTITIES.values())).str.strip_chars()


def _clean_text(column: str) -> pl.Expr:
    text = _decoded(pl.col(column))
    return pl.when(text == "").then(None).otherwise(text).alias(column)


def _unambiguous_prices(items: pl.DataFrame, quarantine: Quarantine) -> tuple[pl.DataFrame, int]:
    """Null and quarantine the prices whose commas could mean two things: "12,99" (a decimal
    comma, or 1299?) and "1,2,3"; a comma is read only as a thousands separator ("1,299.00")."""
    body = pl.col("price").str.strip_chars().str.strip_prefix("$").str.strip_chars()
    ambiguous = body.str.contains(",", literal=True) & ~body.str.contains(THOUSANDS)
    rows = items.filter(ambiguous.fill_null(False))
    if rows.height:
        reason = pl.format(
            "ambiguous price '{}' (a comma is read only as a thousands separator, as in "
            "1,299.00); record kept with price null",
            pl.col("price"),
        )
        quarantine.extend(_quarantine_rows(rows, ["item_id", "price"], reason, FIELD_NULLED))
    kept = pl.when(ambiguous).then(None).otherwise(pl.col("price")).alias("price")
    return items.with_columns(kept), rows.height


def clean_items(meta: pl.DataFrame, quarantine: Quarantine) -> tuple[pl.DataFrame, dict[str, int]]:
    """Deduplicate metadata (first record wins), parse prices, clean text."""
    item_id = pl.col("item_id").str.strip_chars()
    has_id = item_id.is_not_null() & (item_id != "")
    no_id = meta.filter(~has_id)
    if no_id.height:
        reason = pl.lit("metadata record without an item id")
        quarantine.extend(_quarantine_rows(no_id, ["item_id", "title"], reason, DROPPED))
    items = meta.filter(has_id).with_columns(item_id)
    first = pl.int_range(pl.len()).over("item_id") == 0
    duplicates = items.filter(~first)
    if duplicates.height:
        reason = pl.format("duplicate metadata for item {}; the first record is kept", "item_id")
        quarantine.extend(_quarantine_rows(duplicates, ["item_id", "title"], reason, DROPPED))
    items, ambiguous = _unambiguous_prices(items.filter(first), quarantine)
    price = pl.col("price").str.replace_all(r"[$,\s]", "")
    missing_word = price.str.to_lowercase().is_in(["none", "null", "nan"])
    items = items.with_columns(pl.when(missing_word).then(None).otherwise(price).alias("price"))
    positive = Number(pl.Float64(), low=0, meaning="a price is not negative")
    items, bad = _parse_numbers(items, {"price": positive}, ["item_id", "price"], quarantine)
    items = items.with_columns(
        _clean_text("title"),
        _clean_text("description"),
        _clean_text("brand"),
        pl.col("categories").list.eval(_decoded(pl.element())).list.drop_nulls(),
    )
    counts = {
        "metadata_records": meta.height,
        "metadata_without_id": no_id.height,
        "duplicate_metadata": duplicates.height,
        "unparsable_prices": bad["price"] + ambiguous,
    }
    return items, counts


def attach_items(
    clean: CleanInteractions, meta: pl.DataFrame | None, quarantine: Quarantine
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The `items` table: every indexed item with its metadata (nulls where it has none)."""
    counts: dict[str, Any] = {}
    if meta is None:
        meta = pl.DataFrame(schema={"item_id": pl.String()})
    else:
        meta, counts = clean_items(meta, quarantine)
    items = clean.item_index.join(
        meta.drop(SOURCE, LINE, strict=False).with_columns(pl.lit(True).alias("_has_meta")),
        on="item_id",
        how="left",
    )
    without_metadata = items.get_column("_has_meta").null_count()
    missing = {c: pl.lit(None, dtype=t) for c, t in ITEM_TEXT.items() if c not in items.columns}
    items = (
        items.with_columns(**missing)
        .with_columns(pl.col("categories").fill_null(pl.lit([], dtype=pl.List(pl.String()))))
        .select("item_idx", "item_id", *ITEM_TEXT)
        .sort("item_idx")
    )
    report = {
        "items": items.height,
        "items_without_metadata": without_metadata,
        "items_with_image": int(items.get_column("image_uri").is_not_null().sum()),
        "metadata": counts,
    }
    return items, report


def ingest_result(
    clean: CleanInteractions,
    items: pl.DataFrame,
    item_report: dict[str, Any],
    quarantines: list[Quarantine],
    files: list[FileStats],
) -> IngestResult:
    """The tables and the report, the quarantines joined and every file name redacted."""
    quarantine = pl.concat([q.frame() for q in quarantines])
    # the tables and the report name their files without credentials (userinfo, tokens)
    named = {path: redact(path) for path in quarantine["source_file"].unique().to_list()}
    quarantine = quarantine.with_columns(pl.col("source_file").replace_strict(named))
    report = clean.report | item_report
    report["files"] = [vars(f) | {"path": redact(f.path)} for f in files]
    report["quarantine"] = {
        "total": quarantine.height,
        "by_action": dict(quarantine.group_by("action").len().sort("action").iter_rows()),
    }
    return IngestResult(
        users=clean.users,
        items=items,
        interactions=clean.interactions,
        quarantine=quarantine,
        report=report,
    )


def require_interactions(path: str, clean: CleanInteractions, stats: FileStats) -> None:
    """A clear error when nothing is left to train on, naming the file and the step that
    removed the last interaction."""
    if clean.interactions.height:
        return
    if stats.records == 0:
        raise InputFormatError(
            f"{redact(path)}: no interaction records ({stats.lines} lines, {stats.blank} blank, "
            f"{stats.dropped} quarantined); check dataset.interactions"
        )
    emptied = next(step for step in clean.report["steps"] if step["rows_out"] == 0)
    fix = {
        "k_core": "lower ingest.k_core",
        "too_short_to_split": f"every user has fewer than {MIN_SPLITTABLE} interactions",
    }.get(emptied["step"], "check the file (see the quarantine)")
    raise InputFormatError(
        f"{redact(path)}: no interaction left after the {emptied['step']!r} step "
        f"({stats.records} records read); {fix}"
    )


def build_tables(
    reviews: pl.DataFrame,
    meta: pl.DataFrame | None,
    k: int,
    timestamp_divisor: int = 1,
) -> IngestResult:
    """Clean, filter, index and split raw frames (`REVIEW_COLUMNS`, `ITEM_COLUMNS`)."""
    quarantine = Quarantine()
    clean = clean_interactions(reviews, k, quarantine, timestamp_divisor)
    items, item_report = attach_items(clean, meta, quarantine)
    return ingest_result(clean, items, item_report, [quarantine], [])
