"""What the comparison report shows: the compare artifact's tables and inputs, and the figures
every part of the report reads from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from neggen_core.compare.stats import PairedTest
from neggen_core.config import NeggenConfig
from neggen_core.models.registry import MethodId


@dataclass
class Comparison:
    """Everything the report shows, read from the compare artifact's inputs."""

    config: NeggenConfig
    comparison: pl.DataFrame  # one row per run, split, metric and cut-off
    summary: pl.DataFrame
    grid: pl.DataFrame
    curves: pl.DataFrame
    tests: list[PairedTest]
    chosen: dict[str, dict[str, Any]]
    search: list[dict[str, Any]]  # per searched method: points trained, grid size, sampler taken
    upstream: dict[str, Any]
    negatives: pl.DataFrame  # the key negatives
    items: pl.DataFrame  # item_idx, text, visual: what the embeddings stage encoded
    versions: dict[str, str]
    software: dict[str, Any]
    method_ids: dict[str, MethodId]  # the method each label in the tables names

    def methods(self) -> list[str]:
        return self.summary["method"].unique(maintain_order=True).to_list()

    def value(self, method: str, split: str, metric: str, k: int) -> tuple[float, float]:
        """(mean, std) over the seeds."""
        row = self.summary.filter(
            (pl.col("method") == method)
            & (pl.col("split") == split)
            & (pl.col("metric") == metric)
            & (pl.col("k") == k)
        )
        return float(row["mean"][0]), float(row["std"][0])

    def table(self, split: str) -> dict[str, dict[str, dict[str, float]]]:
        """{method: {metric@k: {mean, std}}} for one split."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for row in self.summary.filter(pl.col("split") == split).iter_rows(named=True):
            out.setdefault(row["method"], {})[f"{row['metric']}@{row['k']}"] = {
                "mean": row["mean"],
                "std": row["std"],
            }
        return out

    def per_seed(self, method: str, metric: str, k: int) -> list[tuple[int, float]]:
        """(seed, test value) of each of the method's runs."""
        rows = self.comparison.filter(
            (pl.col("method") == method)
            & (pl.col("split") == "test")
            & (pl.col("metric") == metric)
            & (pl.col("k") == k)
        ).sort("seed")
        return list(zip(rows["seed"].to_list(), rows["value"].to_list(), strict=True))
