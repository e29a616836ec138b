"""The evaluate stage: the trained model's best state, ranked once on valid and once on test.

Writes `metrics` (method, split, metric, k, value), `user_metrics` (the test metrics per user,
for paired significance tests) and `recommendations` (every test user's top items with the
scores the test metrics were computed from), and `report.json`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from neggen_core.artifacts.schemas import METRICS, RECOMMENDATIONS, USER_METRICS
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.config import NeggenConfig
from neggen_core.evaluation.evaluator import Evaluator, Ranking
from neggen_core.models.registry import build_model, method_name
from neggen_core.training.stage import MODEL_FILE, training_data
from neggen_core.training.stage import reads as train_reads
from neggen_core.training.trainer import load_state

SCHEMA_VERSION = 1
EVALUATOR_VERSION = 1
TABLES = {"metrics": METRICS, "user_metrics": USER_METRICS, "recommendations": RECOMMENDATIONS}
REPORT = "report.json"


def reads(config: NeggenConfig) -> tuple[str, ...]:
    """The trained model and what its training read (the modal features for NegGen only)."""
    return (*train_reads(config), "train")


def version_config(config: NeggenConfig) -> dict[str, Any]:
    return {
        "evaluate": config.evaluate.model_dump(mode="json"),
        "evaluator_version": EVALUATOR_VERSION,
    }


def _split_name(name: str) -> tuple[str, int]:
    metric, _, k = name.partition("@")
    return metric, int(k)


def _metric_rows(method: str, ranking: Ranking) -> list[dict[str, Any]]:
    return [
        {"method": method, "split": ranking.split, "metric": m, "k": k, "value": value}
        for name, value in sorted(ranking.metrics.items())
        for m, k in [_split_name(name)]
    ]


def build(
    config: NeggenConfig,
    store: ArtifactStore,
    upstream: Mapping[str, ArtifactRef],
    writer: ArtifactWriter,
) -> dict[str, Any]:
    data = training_data(config, store, upstream)
    model = build_model(config.train, data)
    model.load_state_dict(load_state(store.read_bytes(upstream["train"], MODEL_FILE)))
    evaluator = Evaluator(data, config.evaluate)
    method = method_name(config.train)
    valid = evaluator.rank(model, "valid")
    test = evaluator.rank(model, "test", top=config.evaluate.top_k)

    metrics = pl.DataFrame(
        _metric_rows(method, valid) + _metric_rows(method, test),
        schema=pl.Schema(METRICS),
        orient="row",
    )
    writer.write_table("metrics", metrics)
    per_user = [
        pl.DataFrame(
            {
                "user_idx": test.users.astype(np.int32),
                "split": "test",
                "metric": metric,
                "k": np.int32(k),
                "value": values,
            }
        )
        for name, values in sorted(test.per_user.items())
        for metric, k in [_split_name(name)]
    ]
    writer.write_table("user_metrics", pl.concat(per_user).cast(pl.Schema(USER_METRICS)))
    top = min(config.evaluate.top_k, test.items.shape[1])
    writer.write_table(
        "recommendations",
        pl.DataFrame(
            {
                "user_idx": np.repeat(test.users, top).astype(np.int32),
                "rank": np.tile(np.arange(1, top + 1), len(test.users)).astype(np.int32),
                "item_idx": test.items[:, :top].reshape(-1).astype(np.int32),
                "score": test.scores[:, :top].reshape(-1),
            }
        ),
    )
    train_info = store.manifest("train", upstream["train"].version).info
    report = {
        "method": method,
        "best_epoch": train_info["best_epoch"],
        "valid": valid.metrics,
        "test": test.metrics,
        "test_users": len(test.users),
        "mask_valid_at_test": config.evaluate.mask_valid_at_test,
    }
    writer.write_json(REPORT, report)
    return {
        "method": method,
        "best_epoch": train_info["best_epoch"],
        "test_recall_20": test.metrics["recall@20"],
        "test_ndcg_20": test.metrics["ndcg@20"],
        "valid_recall_20": valid.metrics["recall@20"],
    }
