"""The evaluate stage's tables, built from a hand-made ranking: no model, no store."""

from __future__ import annotations

import numpy as np
import polars as pl

from neggen_core.artifacts.schemas import METRICS, RECOMMENDATIONS, USER_METRICS
from neggen_core.evaluate.compute import (
    metric_rows,
    metrics_frame,
    recommendations_frame,
    split_name,
    user_metrics_frame,
)
from neggen_core.evaluation.evaluator import Ranking


def _ranking(split: str = "test") -> Ranking:
    """Users 1 and 4, three items ranked each; two metrics, given out of name order."""
    return Ranking(
        split=split,
        users=np.array([1, 4]),
        items=np.array([[7, 3, 5], [2, 9, 8]]),
        scores=np.array([[0.9, 0.5, 0.1], [0.8, 0.7, 0.6]], dtype=np.float32),
        per_user={"recall@10": np.array([1.0, 0.5]), "ndcg@2": np.array([0.25, 0.75])},
    )


def test_a_metric_name_splits_into_metric_and_cutoff() -> None:
    assert split_name("recall@20") == ("recall", 20)
    assert split_name("ndcg@5") == ("ndcg", 5)


def test_metric_rows_are_one_per_metric_and_cutoff_with_the_mean() -> None:
    assert metric_rows("lightgcn+rns", _ranking()) == [
        {"method": "lightgcn+rns", "split": "test", "metric": "ndcg", "k": 2, "value": 0.5},
        {"method": "lightgcn+rns", "split": "test", "metric": "recall", "k": 10, "value": 0.75},
    ]


def test_the_metrics_table_holds_each_split_in_order() -> None:
    frame = metrics_frame("mf+dns", _ranking("valid"), _ranking("test"))
    assert frame.select("split", "metric", "k").rows() == [
        ("valid", "ndcg", 2),
        ("valid", "recall", 10),
        ("test", "ndcg", 2),
        ("test", "recall", 10),
    ]
    assert frame["method"].unique().to_list() == ["mf+dns"]
    assert frame["value"].to_list() == [0.5, 0.75, 0.5, 0.75]
    assert frame.schema == pl.Schema(METRICS)


def test_user_metrics_are_every_metric_of_every_ranked_user() -> None:
    frame = user_metrics_frame(_ranking())
    assert frame.rows() == [
        (1, "test", "ndcg", 2, 0.25),
        (4, "test", "ndcg", 2, 0.75),
        (1, "test", "recall", 10, 1.0),
        (4, "test", "recall", 10, 0.5),
    ]
    assert frame.schema == pl.Schema(USER_METRICS)


def test_recommendations_are_ranked_from_one_with_their_scores() -> None:
    frame = recommendations_frame(_ranking(), top_k=2)
    assert frame["user_idx"].to_list() == [1, 1, 4, 4]
    assert frame["rank"].to_list() == [1, 2, 1, 2]
    assert frame["item_idx"].to_list() == [7, 3, 2, 9]
    np.testing.assert_array_equal(frame["score"].to_numpy(), np.float32([0.9, 0.5, 0.8, 0.7]))
    assert frame.schema == pl.Schema(RECOMMENDATIONS)


def test_recommendations_stop_at_the_items_ranked() -> None:
    frame = recommendations_frame(_ranking(), top_k=10)
    assert frame["rank"].to_list() == [1, 2, 3, 1, 2, 3]
    assert frame["item_idx"].to_list() == [7, 3, 5, 2, 9, 8]
