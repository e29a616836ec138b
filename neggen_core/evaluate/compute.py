"""The evaluate stage's tables from the evaluator's rankings: the metrics, the test metrics per
user and the top items each test user is recommended. Pure: frames in memory, no store."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from neggen_core.artifacts.schemas import METRICS, USER_METRICS
from neggen_core.evaluation.evaluator import Ranking


def split_name(name: str) -> tuple[str, int]:
    """`recall@20` -> ("recall", 20)."""
    metric, _, k = name.partition("@")
    return metric, int(k)


def metric_rows(method: str, ranking: Ranking) -> list[dict[str, Any]]:
    """One row per metric and cut-off of the ranking, by metric name."""
    return [
        {"method": method, "split": ranking.split, "metric": m, "k": k, "value": value}
        for name, value in sorted(ranking.metrics.items())
        for m, k in [split_name(name)]
    ]


def metrics_frame(method: str, *rankings: Ranking) -> pl.DataFrame:
    """The `metrics` table: the rows of each ranking, in order."""
    rows = [row for ranking in rankings for row in metric_rows(method, ranking)]
    return pl.DataFrame(rows, schema=pl.Schema(METRICS), orient="row")


def user_metrics_frame(ranking: Ranking) -> pl.DataFrame:
    """The `user_metrics` table: every metric of every ranked user, metric by metric."""
    per_user = [
        pl.DataFrame(
            {
                "user_idx": ranking.users.astype(np.int32),
                "split": ranking.split,
                "metric": metric,
                "k": np.int32(k),
                "value": values,
            }
        )
        for name, values in sorted(ranking.per_user.items())
        for metric, k in [split_name(name)]
    ]
    return pl.concat(per_user).cast(pl.Schema(USER_METRICS))


def recommendations_frame(ranking: Ranking, top_k: int) -> pl.DataFrame:
    """The `recommendations` table: each ranked user's first `top_k` items (as many as were
    ranked, if fewer), ranked from 1, with their scores."""
    top = min(top_k, ranking.items.shape[1])
    return pl.DataFrame(
        {
            "user_idx": np.repeat(ranking.users, top).astype(np.int32),
            "rank": np.tile(np.arange(1, top + 1), len(ranking.users)).astype(np.int32),
            "item_idx": ranking.items[:, :top].reshape(-1).astype(np.int32),
            "score": ranking.scores[:, :top].reshape(-1),
        }
    )
