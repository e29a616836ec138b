"""Ingest's cleaning steps on tiny datasets, with row counts asserted exactly after each step."""

from __future__ import annotations

import polars as pl

from neggen_core.ingest.compute import IngestResult, build_tables, dense_index, k_core
from neggen_core.ingest.formats import REVIEW_COLUMNS


def reviews(rows: list[tuple[str, str, int | None]]) -> pl.DataFrame:
    """Reviews of (user, item, timestamp), in source order."""
    return pl.DataFrame(
        {
            "user_id": [u for u, _, _ in rows],
            "item_id": [i for _, i, _ in rows],
            "rating": ["5"] * len(rows),
            "timestamp": [None if t is None else str(t) for _, _, t in rows],
            "split": [None] * len(rows),
            "_file": ["mem"] * len(rows),
            "_line": list(range(1, len(rows) + 1)),
        },
        schema=REVIEW_COLUMNS,
    )


def run(rows: list[tuple[str, str, int | None]], k: int = 0) -> IngestResult:
    return build_tables(reviews(rows), None, k)


def steps(result: IngestResult) -> dict[str, tuple[int, int]]:
    return {s["step"]: (s["rows_in"], s["rows_out"]) for s in result.report["steps"]}


def test_split_rule_per_user_in_time_order() -> None:
    rows = []
    for user, n in (("a", 3), ("b", 10), ("c", 25), ("d", 19)):
        rows += [(user, f"i{j}", 1000 - j) for j in range(n)]  # newest first in the file
    result = run(rows)
    by_user = (
        result.interactions.join(result.users, on="user_idx")
        .group_by("user_id", "split")
        .len()
        .sort("user_id", "split")
    )
    counts = {(u, s): n for u, s, n in by_user.iter_rows()}
    assert counts == {
        ("a", "test"): 1,
        ("a", "train"): 1,
        ("a", "valid"): 1,
        ("b", "test"): 1,
        ("b", "train"): 8,
        ("b", "valid"): 1,
        ("c", "test"): 2,
        ("c", "train"): 21,
        ("c", "valid"): 2,
        ("d", "test"): 1,
        ("d", "train"): 17,
        ("d", "valid"): 1,
    }
    c = result.interactions.join(result.users, on="user_idx").filter(pl.col("user_id") == "c")
    # train is the earliest, test the latest
    assert c.filter(pl.col("split") == "test").get_column("timestamp").to_list() == [999, 1000]
    assert c.filter(pl.col("split") == "train").get_column("timestamp").max() == 996
    assert result.users.filter(pl.col("user_id") == "c").select("n_train", "n_valid", "n_test").row(
        0
    ) == (21, 2, 2)


def test_ties_and_missing_timestamps_keep_source_order() -> None:
    result = run([("u", "x", 5), ("u", "y", 5), ("u", "z", None), ("u", "w", 1)])
    order = result.interactions.join(result.items, on="item_idx").get_column("item_id").to_list()
    assert order == ["w", "x", "y", "z"]
    assert result.interactions.get_column("split").to_list() == ["train", "train", "valid", "test"]


def test_duplicates_keep_the_earliest() -> None:
    result = run([("u", "x", 9), ("u", "x", 3), ("u", "y", 4), ("u", "z", 5), ("u", "x", 7)])
    assert steps(result)["duplicates"] == (5, 3)
    assert sorted(result.interactions.get_column("timestamp").to_list()) == [3, 4, 5]


def test_k_core_is_iterative() -> None:
    # u3 has 1 interaction; removing it drops item c to 1, which drops u2 to 1 and so on.
    rows = [
        ("u1", "a", 1),
        ("u1", "b", 2),
        ("u2", "a", 1),
        ("u2", "b", 2),
        ("u2", "c", 3),
        ("u3", "c", 1),
    ]
    frame = pl.DataFrame({"user_id": [u for u, _, _ in rows], "item_id": [i for _, i, _ in rows]})
    kept, rounds = k_core(frame, 2, "user_id", "item_id")
    assert sorted(kept.rows()) == [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")]
    assert rounds == 3
    dropped_all, _ = k_core(frame, 3, "user_id", "item_id")
    assert dropped_all.height == 0


def test_short_users_are_dropped_and_counted() -> None:
    result = run([("a", "x", 1), ("a", "y", 2), ("b", "x", 1), ("b", "y", 2), ("b", "z", 3)])
    assert result.report["steps"][-1] == {
        "step": "too_short_to_split",
        "rows_in": 5,
        "rows_out": 3,
        "dropped": 2,
        "users_dropped": 1,
        "min_interactions": 3,
    }
    assert result.users.get_column("user_id").to_list() == ["b"]
    assert result.report["split"] == {"train": 1, "valid": 1, "test": 1}


def test_dense_index_is_natural_order() -> None:
    numeric = dense_index(pl.Series("user_id", ["10", "2", "1", "2"]), "user_idx")
    assert numeric.rows() == [(0, "1"), (1, "2"), (2, "10")]
    text = dense_index(pl.Series("item_id", ["B2", "A1", "B10"]), "item_idx")
    assert text.get_column("item_id").to_list() == ["A1", "B10", "B2"]
    assert numeric.schema["user_idx"] == pl.Int32
