"""What the evaluate stage promises: its tables, report, what its version depends on, and the
readers its consumers use."""

from __future__ import annotations

from typing import Any

import polars as pl

from neggen_core.artifacts.schemas import METRICS, RECOMMENDATIONS, USER_METRICS
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.config import NeggenConfig
from neggen_core.train.contract import reads as train_reads

UPSTREAM = ("ingest", "embeddings", "train")  # a config may read fewer: `reads`
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


def read_metrics(store: ArtifactStore, ref: ArtifactRef) -> pl.DataFrame:
    """The `metrics` table: (method, split, metric, k, value) on valid and on test."""
    return store.read_frame(ref, "metrics", METRICS)


def read_user_metrics(store: ArtifactStore, ref: ArtifactRef) -> pl.DataFrame:
    """The `user_metrics` table: every test metric per test user."""
    return store.read_frame(ref, "user_metrics", USER_METRICS)


def read_report(store: ArtifactStore, ref: ArtifactRef) -> dict[str, Any]:
    """`report.json`: the method, its best epoch, and its valid and test metrics by name."""
    report = store.read_json(ref, REPORT)
    assert isinstance(report, dict)
    return report
