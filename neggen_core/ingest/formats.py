"""Readers of the supported input formats into two common raw frames.

Each format has a reader for its interactions file, giving `REVIEW_COLUMNS` (user_id, item_id,
rating, timestamp, split as raw strings, plus source file and line), and one for its metadata
file, giving `ITEM_COLUMNS` (item_id, title, description, brand, categories, price as a raw
string, image_uri, plus source file and line). Numbers are parsed, and bad ones quarantined, by
the ingest pipeline, the same way for every format.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from neggen_core.errors import InputFormatError
from neggen_core.ingest.literals import DROPPED, LINE, Kind, is_unicode, sanitise
from neggen_core.ingest.records import (
    FileStats,
    Quarantine,
    iter_line_blocks,
    read_bytes,
    read_records,
    too_long_row,
)

SOURCE = "_file"

REVIEW_COLUMNS = {
    "user_id": pl.String(),
    "item_id": pl.String(),
    "rating": pl.String(),
    "timestamp": pl.String(),
    "split": pl.String(),
    SOURCE: pl.String(),
    LINE: pl.Int64(),
}
ITEM_COLUMNS = {
    "item_id": pl.String(),
    "title": pl.String(),
    "description": pl.String(),
    "brand": pl.String(),
    "categories": pl.List(pl.String()),
    "price": pl.String(),
    "image_uri": pl.String(),
    SOURCE: pl.String(),
    LINE: pl.Int64(),
}


FileReader = Callable[[str, Quarantine, int], tuple[pl.DataFrame, FileStats]]
"""(path, quarantine, max_line_bytes) -> (raw frame, what reading saw)."""


@dataclass(frozen=True)
class Format:
    """How to read one input format: its interactions file and its metadata file."""

    read_reviews: FileReader
    read_items: FileReader
    timestamp_divisor: int = 1


def _finish(frame: pl.DataFrame, columns: dict[str, pl.DataType], path: str) -> pl.DataFrame:
    frame = frame.with_columns(pl.lit(path, dtype=pl.String()).alias(SOURCE))
    missing = [pl.lit(None, dtype=t).alias(n) for n, t in columns.items() if n not in frame.columns]
    return frame.with_columns(missing).select(list(columns)).cast(pl.Schema(columns))


def _resolve_images(items: pl.DataFrame, items_path: str) -> pl.DataFrame:
    """Image paths relative to the metadata file's folder, so the items table stays right when
    the data moves: a relative path is kept, a path under that folder made relative to it; a
    path elsewhere and a URL are kept as they are (the image policy decides what is read)."""
    base = posixpath.dirname(items_path).rstrip("/") + "/"
    uri = pl.col("image_uri")
    inside = uri.is_not_null() & uri.str.starts_with(base)
    return items.with_columns(
        pl.when(inside).then(uri.str.slice(len(base))).otherwise(uri).alias("image_uri")
    )


def _first_image(*candidates: pl.Expr) -> pl.Expr:
    return pl.coalesce([c.list.first() for c in candidates])


# -- Amazon 2014 / 2018 -----------------------------------------------------------------------

_REVIEWS_2014: dict[str, Kind] = {
    "reviewerID": "str",
    "asin": "str",
    "overall": "scalar",
    "unixReviewTime": "scalar",
}


def read_reviews_2014(
    path: str, quarantine: Quarantine, max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """Amazon 2014 and 2018 review lines (JSON)."""
    frame, stats = read_records(
        path,
        _REVIEWS_2014,
        quarantine,
        what="Amazon review JSON lines",
        max_line_bytes=max_line_bytes,
    )
    frame = frame.rename(
        {
            "reviewerID": "user_id",
            "asin": "item_id",
            "overall": "rating",
            "unixReviewTime": "timestamp",
        }
    )
    return _finish(frame, REVIEW_COLUMNS, path), stats


def read_meta_2014(
    path: str, quarantine: Quarantine, max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """Amazon 2014 metadata: Python-literal lines (single-quoted dicts)."""
    kinds: dict[str, Kind] = {
        "asin": "str",
        "title": "str",
        "description": "str",
        "brand": "str",
        "categories": "str_list_list",
        "price": "scalar",
        "imUrl": "str",
    }
    meta, stats = read_records(
        path,
        kinds,
        quarantine,
        parser="python",
        what="Amazon 2014 metadata (Python literals)",
        max_line_bytes=max_line_bytes,
    )
    meta = meta.with_columns(
        pl.col("categories").list.eval(pl.element().explode()).list.unique(maintain_order=True)
    ).rename({"asin": "item_id", "imUrl": "image_uri"})
    return _resolve_images(_finish(meta, ITEM_COLUMNS, path), path), stats


def read_meta_2018(
    path: str, quarantine: Quarantine, max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """Amazon 2018 metadata: JSON lines, with lists for text, categories and images."""
    kinds: dict[str, Kind] = {
        "asin": "str",
        "title": "str",
        "description": "str_list",
        "feature": "str_list",
        "brand": "str",
        "category": "str_list",
        "price": "scalar",
        "imageURL": "str_list",
        "imageURLHighRes": "str_list",
    }
    meta, stats = read_records(
        path,
        kinds,
        quarantine,
        what="Amazon 2018 metadata JSON lines",
        max_line_bytes=max_line_bytes,
    )
    empty = pl.lit([], dtype=pl.List(pl.String()))
    meta = meta.select(
        pl.col("asin").alias("item_id"),
        "title",
        pl.concat_list(pl.col("description").fill_null(empty), pl.col("feature").fill_null(empty))
        .list.join("\n")
        .alias("description"),
        "brand",
        pl.col("category").alias("categories"),
        "price",
        _first_image(pl.col("imageURLHighRes"), pl.col("imageURL")).alias("image_uri"),
        LINE,
    )
    return _resolve_images(_finish(meta, ITEM_COLUMNS, path), path), stats


# -- Amazon Reviews 2023 ----------------------------------------------------------------------


def read_reviews_2023(
    path: str, quarantine: Quarantine, max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """Amazon Reviews 2023 review JSONL: items keyed by parent_asin, timestamps in ms."""
    review_kinds: dict[str, Kind] = {
        "user_id": "str",
        "parent_asin": "str",
        "asin": "str",
        "rating": "scalar",
        "timestamp": "scalar",
    }
    reviews, stats = read_records(
        path,
        review_kinds,
        quarantine,
        what="Amazon 2023 review JSON lines",
        max_line_bytes=max_line_bytes,
    )
    reviews = reviews.with_columns(pl.coalesce("parent_asin", "asin").alias("item_id")).drop(
        "parent_asin", "asin"
    )
    return _finish(reviews, REVIEW_COLUMNS, path), stats


def read_meta_2023(
    path: str, quarantine: Quarantine, max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """Amazon Reviews 2023 metadata JSONL."""
    item_kinds: dict[str, Kind] = {
        "parent_asin": "str",
        "title": "str",
        "description": "str_list",
        "features": "str_list",
        "categories": "str_list",
        "main_category": "str",
        "store": "str",
        "price": "scalar",
        "images": "images",
    }
    meta, stats = read_records(
        path,
        item_kinds,
        quarantine,
        what="Amazon 2023 metadata JSON lines",
        max_line_bytes=max_line_bytes,
    )
    empty = pl.lit([], dtype=pl.List(pl.String()))
    images = pl.col("images")
    meta = meta.select(
        pl.col("parent_asin").alias("item_id"),
        "title",
        pl.concat_list(pl.col("description").fill_null(empty), pl.col("features").fill_null(empty))
        .list.join("\n")
        .alias("description"),
        pl.col("store").alias("brand"),
        pl.when(pl.col("categories").list.len() > 0)
        .then(pl.col("categories"))
        .otherwise(pl.concat_list(pl.col("main_category")).list.drop_nulls())
        .alias("categories"),
        pl.col("price").replace({"None": None}),
        pl.coalesce(
            images.list.first().struct.field("hi_res"),
            images.list.first().struct.field("large"),
            images.list.first().struct.field("thumb"),
        ).alias("image_uri"),
        LINE,
    )
    return _resolve_images(_finish(meta, ITEM_COLUMNS, path), path), stats


# -- MMRec .inter TSV -------------------------------------------------------------------------

_MMREC_SPLITS = {"0": "train", "1": "valid", "2": "test"}


def _decode_lines(
    lines: list[bytes], first_numbers: list[int], path: str, quarantine: Quarantine
) -> tuple[list[str], list[int]]:
    try:
        return b"\n".join(lines).decode("utf-8").split("\n"), first_numbers
    except UnicodeDecodeError:
        texts, numbers = [], []
        for number, line in zip(first_numbers, lines, strict=True):
            try:
                texts.append(line.decode("utf-8"))
                numbers.append(number)
            except UnicodeDecodeError as exc:
                preview = line[:500].decode("utf-8", errors="replace")
                quarantine.add(path, number, preview, f"not UTF-8 text ({exc})", DROPPED)
        return texts, numbers


def read_tsv(
    path: str, quarantine: Quarantine, required: tuple[str, ...], max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """A tab-separated file with a header line (RecBole `name:type` headers allowed)."""
    stats = FileStats(path=path)
    header: list[str] | None = None
    pieces: list[pl.DataFrame] = []
    for block in iter_line_blocks(path, max_line_bytes):
        stats.lines += block.lines
        if block.too_long is not None:
            quarantine.rows.append(
                too_long_row(path, block.first, block.data, block.too_long, max_line_bytes)
            )
            continue
        split = block.data.split(b"\n")
        kept = []
        for number, line in enumerate(split, start=block.first):
            if not line.strip():
                continue
            if len(line) > max_line_bytes:
                quarantine.rows.append(too_long_row(path, number, line, len(line), max_line_bytes))
            else:
                kept.append((number, line.rstrip(b"\r")))
        stats.blank += sum(1 for line in split if not line.strip())
        if header is None and kept:
            header_line = kept.pop(0)[1].decode("utf-8", errors="replace")
            header = [name.split(":")[0].strip() for name in header_line.split("\t")]
            absent = [name for name in required if name not in header]
            if absent:
                raise InputFormatError(
                    f"{path}: header line has no column {', '.join(map(repr, absent))} "
                    f"(found {header}); expected a tab-separated header with {', '.join(required)}"
                )
        if not kept:
            continue
        texts, numbers = _decode_lines(
            [ln for _, ln in kept], [n for n, _ in kept], path, quarantine
        )
        assert header is not None
        frame = pl.DataFrame(
            {"text": texts, LINE: numbers}, schema={"text": pl.String(), LINE: pl.Int64()}
        )
        fields = pl.col("text").str.split("\t")
        frame = frame.with_columns(fields.alias("fields"))
        bad = frame.filter(pl.col("fields").list.len() != len(header))
        quarantine.extend(
            bad.select(
                pl.lit(path).alias("source_file"),
                pl.col(LINE).alias("line"),
                pl.col("text").str.slice(0, 500).alias("record"),
                pl.format(
                    "expected {} tab-separated fields, got {}",
                    pl.lit(len(header)),
                    pl.col("fields").list.len(),
                ).alias("reason"),
                pl.lit(DROPPED).alias("action"),
            )
        )
        good = frame.filter(pl.col("fields").list.len() == len(header))
        pieces.append(
            good.select(
                *[
                    pl.col("fields").list.get(i).str.strip_chars().alias(name)
                    for i, name in enumerate(header)
                ],
                LINE,
            )
        )
    if header is None:
        raise InputFormatError(f"{path}: the file is empty; expected a tab-separated header line")
    frame = (
        pl.concat(pieces)
        if pieces
        else pl.DataFrame(schema={**dict.fromkeys(header, pl.String()), LINE: pl.Int64()})
    )
    stats.records = frame.height
    stats.dropped = stats.lines - stats.blank - 1 - stats.records
    return frame, stats


def read_mmrec_inter(
    path: str, quarantine: Quarantine, max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """MMRec `<name>.inter`: userID, itemID, rating, timestamp, x_label (0/1/2 = its split)."""
    inter, stats = read_tsv(path, quarantine, ("userID", "itemID"), max_line_bytes)
    if "x_label" in inter.columns:
        label = pl.col("x_label")
        bad = inter.filter(~label.is_in(list(_MMREC_SPLITS)) | label.is_null())
        quarantine.extend(
            bad.select(
                pl.lit(path).alias("source_file"),
                pl.col(LINE).alias("line"),
                pl.concat_str(pl.all().exclude(LINE).fill_null(""), separator="\t").alias("record"),
                pl.format(
                    "x_label {} is not 0 (train), 1 (valid) or 2 (test)", label.fill_null("<empty>")
                ).alias("reason"),
                pl.lit(DROPPED).alias("action"),
            )
        )
        inter = inter.filter(label.is_in(list(_MMREC_SPLITS))).with_columns(
            label.replace_strict(_MMREC_SPLITS).alias("split")
        )
    reviews = inter.rename({"userID": "user_id", "itemID": "item_id"})
    return _finish(reviews, REVIEW_COLUMNS, path), stats


def read_mmrec_items(
    path: str, quarantine: Quarantine, max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """Optional item text for MMRec data: a TSV keyed by itemID with any of title,
    description, brand, categories ("A, B"), price, image_uri (or imUrl)."""
    text, stats = read_tsv(path, quarantine, ("itemID",), max_line_bytes)
    renames = {"itemID": "item_id", "imUrl": "image_uri"}
    text = text.rename({k: v for k, v in renames.items() if k in text.columns})
    if "categories" in text.columns:
        text = text.with_columns(pl.col("categories").str.split(", "))
    known = [c for c in ITEM_COLUMNS if c in text.columns]
    return _resolve_images(_finish(text.select(known), ITEM_COLUMNS, path), path), stats


# -- Index-keyed JSON (one document per file) ------------------------------------------------


def _load_document(path: str) -> Any:
    try:
        return json.loads(read_bytes(path))
    except json.JSONDecodeError as exc:
        raise InputFormatError(
            f"{path}: not a valid JSON document (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}); index_json expects one JSON object per file"
        ) from exc
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputFormatError(
            f"{path}: unreadable ({exc}); the file is corrupt or truncated"
        ) from exc


def _unicode_keys(
    document: dict[str, Any], what: str, path: str, quarantine: Quarantine
) -> dict[str, Any]:
    """The entries whose key is encodable text; a key with a lone surrogate escape is
    quarantined with its entry."""
    kept = {key: value for key, value in document.items() if is_unicode(key)}
    for key in (key for key in document if key not in kept):
        reason = f"{what} id {key!r} is not valid Unicode text (a lone surrogate escape)"
        quarantine.add(path, None, _entry(key, document[key]), reason, DROPPED)
    return kept


def _entry(key: str, value: Any) -> str:
    return json.dumps({key: value})[:500]


def read_index_inter(
    path: str, quarantine: Quarantine, max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """`<name>.inter.json`: {user: [item index, ...]}, each list in time order."""
    users = _load_document(path)
    if not isinstance(users, dict):
        raise InputFormatError(f"{path}: expected an object of user -> list of item indices")
    entries = len(users)
    users = _unicode_keys(users, "user", path, quarantine)
    try:
        frame = pl.DataFrame(
            {"user_id": list(users.keys()), "items": list(users.values())},
            schema={"user_id": pl.String(), "items": pl.List(pl.Int64())},
            strict=True,
        )
    except (TypeError, ValueError, pl.exceptions.PolarsError):
        frame = _sanitise_user_lists(users, path, quarantine)
    reviews = (
        frame.explode("items", keep_nulls=False)
        .select("user_id", pl.col("items").cast(pl.String()).alias("item_id"))
        .with_columns(pl.lit(None, dtype=pl.Int64()).alias(LINE))
    )
    stats = FileStats(path=path, lines=entries, records=reviews.height)
    return _finish(reviews, REVIEW_COLUMNS, path), stats


def read_index_items(
    path: str, quarantine: Quarantine, max_line_bytes: int
) -> tuple[pl.DataFrame, FileStats]:
    """`<name>.item.json`: {item index: {title, description, brand, categories "A, B, C"}}."""
    meta_doc = _load_document(path)
    if not isinstance(meta_doc, dict):
        raise InputFormatError(f"{path}: expected an object of item index -> item text")
    entries = len(meta_doc)
    meta_doc = _unicode_keys(meta_doc, "item", path, quarantine)
    kinds: dict[str, Kind] = {
        "title": "str",
        "description": "str",
        "brand": "str",
        "categories": "str_list",
        "price": "scalar",
        "image_uri": "str",
    }
    rows = []
    for key, value in meta_doc.items():
        if isinstance(value, dict) and isinstance(value.get("categories"), str):
            value = {
                **value,
                "categories": [c.strip() for c in value["categories"].split(", ") if c.strip()],
            }
        row = sanitise(value, kinds, path, None, _entry(key, value), quarantine.rows)
        if row is not None:
            rows.append({"item_id": key, **row})
    schema = {"item_id": pl.String(), **{k: v for k, v in ITEM_COLUMNS.items() if k in kinds}}
    meta = pl.DataFrame(rows, schema=schema, orient="row")
    stats = FileStats(path=path, lines=entries, records=meta.height, dropped=entries - meta.height)
    return _resolve_images(_finish(meta, ITEM_COLUMNS, path), path), stats


def _sanitise_user_lists(users: dict[str, Any], path: str, quarantine: Quarantine) -> pl.DataFrame:
    """The slow path, taken only when some user's list is malformed."""
    keys, lists = [], []
    for user, value in users.items():
        if not isinstance(value, list):
            quarantine.add(
                path,
                None,
                _entry(user, value),
                f"user {user!r}: expected a list of item indices, got {type(value).__name__}",
                DROPPED,
            )
            continue
        good = []
        for position, item in enumerate(value):
            if isinstance(item, int) and not isinstance(item, bool):
                good.append(item)
            else:
                quarantine.add(
                    path,
                    None,
                    _entry(user, value),
                    f"user {user!r}, position {position}: item index {item!r} is not an integer",
                    DROPPED,
                )
        keys.append(user)
        lists.append(good)
    return pl.DataFrame(
        {"user_id": keys, "items": lists},
        schema={"user_id": pl.String(), "items": pl.List(pl.Int64())},
    )


FORMATS: dict[str, Format] = {
    "amazon2014": Format(read_reviews_2014, read_meta_2014),
    "amazon2018": Format(read_reviews_2014, read_meta_2018),
    "amazon2023": Format(read_reviews_2023, read_meta_2023, timestamp_divisor=1000),
    "mmrec": Format(read_mmrec_inter, read_mmrec_items),
    "index_json": Format(read_index_inter, read_index_items),
}
