"""The ingest stage's logic on tiny hand-made frames: k-core, dense indices, the split, the
cleaning steps; and the record parser's subprocess, which must answer as `parse_lines` does."""

from __future__ import annotations

import json

import polars as pl

from neggen_core.ingest.compute import clean_interactions, clean_items, dense_index, k_core
from neggen_core.ingest.formats import ITEM_COLUMNS, REVIEW_COLUMNS
from neggen_core.ingest.literals import LINE, Kind, parse_lines, parse_lines_in_subprocess
from neggen_core.ingest.records import Quarantine


def _reviews(rows: list[tuple[str, str, str | None, str | None]]) -> pl.DataFrame:
    """Raw reviews of (user_id, item_id, rating, timestamp), in source order."""
    return pl.DataFrame(
        [(u, i, r, t, None, "mem", line) for line, (u, i, r, t) in enumerate(rows, 1)],
        schema=REVIEW_COLUMNS,
        orient="row",
    )


def test_k_core_drops_a_user_below_k_and_cascades() -> None:
    interactions = pl.DataFrame(
        {"user": [0, 0, 1, 1, 2, 2], "item": [0, 1, 0, 1, 0, 2]},
    )
    kept, rounds = k_core(interactions, 2)
    # item 2 has one user: it goes, which leaves user 2 with one item, so user 2 goes too
    assert sorted(kept.rows()) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert rounds == 3


def test_dense_index_follows_numeric_order_when_every_id_is_an_integer() -> None:
    numeric = dense_index(pl.Series("user_id", ["10", "9", "100", "9"]), "user")
    assert numeric.rows() == [(0, "9"), (1, "10"), (2, "100")]
    mixed = dense_index(pl.Series("user_id", ["10", "9", "x"]), "user")
    assert mixed.rows() == [(0, "10"), (1, "9"), (2, "x")]


def test_the_split_puts_each_users_latest_interaction_in_test() -> None:
    reviews = _reviews(
        [
            ("a", "i1", "5", "30"),  # a's latest, though first in the file
            ("a", "i2", "5", "10"),
            ("a", "i3", "5", "20"),
            ("b", "i1", "5", "7"),
            ("b", "i2", "5", "5"),
            ("b", "i3", "5", "6"),
        ]
    )
    clean = clean_interactions(reviews, 0, Quarantine())
    split = (
        clean.interactions.join(clean.users, on="user_idx")
        .sort("user_id", "timestamp")
        .select("user_id", "timestamp", "split")
    )
    # each user's latest interaction is test, the one before valid, the rest train
    order = ["train", "valid", "test"]
    assert split.rows() == [("a", t, s) for t, s in zip((10, 20, 30), order, strict=True)] + [
        ("b", t, s) for t, s in zip((5, 6, 7), order, strict=True)
    ]
    assert clean.users.select("user_id", "n_train", "n_valid", "n_test").rows() == [
        ("a", 1, 1, 1),
        ("b", 1, 1, 1),
    ]


def test_duplicates_keep_the_earliest_and_a_bad_rating_is_nulled_and_quarantined() -> None:
    reviews = _reviews(
        [
            ("a", "i1", "1", "50"),
            ("a", "i1", "4", "10"),  # the same pair, earlier: kept
            ("a", "i2", "five", "20"),
            ("a", "i3", "3", "30"),
            ("", "i3", "3", "40"),
        ]
    )
    quarantine = Quarantine()
    clean = clean_interactions(reviews, 0, quarantine)
    kept = clean.interactions.sort("timestamp").select("timestamp", "rating").rows()
    assert kept == [(10, 4.0), (20, None), (30, 3.0)]
    dropped = {step["step"]: step["dropped"] for step in clean.report["steps"]}
    assert (dropped["missing_ids"], dropped["duplicates"]) == (1, 1)
    assert [(r["line"], r["action"], r["reason"]) for r in quarantine.rows] == [
        (3, "field_nulled", "unparsable rating 'five'; record kept with rating null"),
        (5, "dropped", "missing user id"),
    ]


def test_clean_items_keeps_the_first_record_and_nulls_an_ambiguous_price() -> None:
    meta = pl.DataFrame(
        [
            ("a", " Mug&reg; ", None, None, [" Home &amp; Garden "], "$1,299.00", None, "m", 1),
            ("a", "Second mug", None, None, [], "$2", None, "m", 2),
            ("b", "Pen", None, None, [], "12,99", None, "m", 3),
        ],
        schema=ITEM_COLUMNS,
        orient="row",
    )
    quarantine = Quarantine()
    items, counts = clean_items(meta, quarantine)
    assert items.select("item_id", "title", "categories", "price").rows() == [
        ("a", "Mug\u00ae", ["Home & Garden"], 1299.0),
        ("b", "Pen", [], None),
    ]
    assert (counts["duplicate_metadata"], counts["unparsable_prices"]) == (1, 1)
    assert [(r["line"], r["action"]) for r in quarantine.rows] == [
        (2, "dropped"),
        (3, "field_nulled"),
    ]


def test_the_parser_subprocess_answers_as_parse_lines_does() -> None:
    lines = [
        "{'item_id': 'a', 'title': 'caf\u00e9 \\ud800', 'categories': [['A', 'B']]}".encode(),
        b"\xff\xfe not UTF-8",
        b"{'item_id': 'b\\nc', 'title': 3}",
        b"[1, 2]",
        b"{'item_id': 'd', 'title': {'x': 1}}",
        b"{'item_id': 'e',\n 'title': 'two lines'}",
    ]
    kinds: dict[str, Kind] = {"item_id": "str", "title": "str", "categories": "str_list_list"}
    source, numbers = "meta \udcff.json", [1, 2, 3, 4, 5, 6]
    in_process = parse_lines(source, numbers, lines, kinds, "python")
    assert parse_lines_in_subprocess(source, numbers, lines, kinds, "python") == in_process
    records, sink = in_process
    assert [json.loads(row)[LINE] for row in records.splitlines()] == [1, 3, 5, 6]
    assert [(r["line"], r["action"]) for r in sink] == [
        (1, "field_nulled"),  # a lone surrogate
        (2, "dropped"),  # not UTF-8
        (4, "dropped"),  # not an object
        (5, "field_nulled"),  # a title that is not a string
    ]


def test_a_quarantine_reason_is_the_same_on_every_run() -> None:
    """`ast` names a bare name's node by its memory address; the reason leaves it out."""
    reasons = {
        parse_lines("meta.json", [7], [b"{'item_id': oops}"], {"item_id": "str"}, "python")[1][0][
            "reason"
        ]
        for _ in range(3)
    }
    assert len(reasons) == 1
    assert "0x" not in reasons.pop()
