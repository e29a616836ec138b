"""The compare artifact: every compared run's results in one table, their statistics, the report.

Its version depends on the compare, train and evaluate sections and the four data stages: the
runs are deterministic functions of those, so a comparison built under the same config is the
same comparison. Building it reads the runs' artifacts, which must exist (`neggen compare`
trains them first; see `plan`).

Tables: `comparison` (one row per run, split, metric and cut-off), `summary` (mean and standard
deviation over seeds), `grid` (every grid run's valid score, the chosen one marked), `curves`
(valid Recall@20 per epoch). Files: `report.json`, `report.md`, `report.html` (self-contained)
and the figures as PNG.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import polars as pl

from neggen_core.artifacts.schemas import COMPARISON, CURVES, GRID, SUMMARY
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.attributes.contract import read_descriptions
from neggen_core.compare import plan as planning
from neggen_core.compare.report import Comparison, render, verdict
from neggen_core.compare.stats import PairedTest, holm, paired_test
from neggen_core.config import NeggenConfig
from neggen_core.embeddings.compute import item_texts
from neggen_core.evaluate import contract as evaluate_contract
from neggen_core.ingest.contract import read_items
from neggen_core.models.registry import MethodId
from neggen_core.negatives.contract import read_negatives
from neggen_core.pipeline.spec import Build, StageSpec
from neggen_core.provenance import software
from neggen_core.train import contract as train_contract

SCHEMA_VERSION = 1
REPORT_VERSION = 3  # bump when the report's content changes for the same runs
TABLES = {"comparison": COMPARISON, "summary": SUMMARY, "grid": GRID, "curves": CURVES}
SIGNIFICANCE_METRICS = (("recall", 20), ("ndcg", 20))
CONTROLS = ("real_only", "random_intervention")
DATA_STAGES = ("ingest", "attributes", "negatives", "embeddings")


def version_config(config: NeggenConfig) -> dict[str, Any]:
    return {
        "compare": config.compare.model_dump(mode="json"),
        **train_contract.version_config(config),
        "evaluator_version": evaluate_contract.EVALUATOR_VERSION,
        "report_version": REPORT_VERSION,
    }


def _run_tables(
    store: ArtifactStore, built: planning.RunArtifacts
) -> tuple[list[dict[str, Any]], pl.DataFrame]:
    """A run's rows of `comparison` and of `curves` (its training log read once)."""
    log = train_contract.read_training_log(store, built.train)
    metrics = evaluate_contract.read_metrics(store, built.evaluate)
    common = {
        "method": built.label,
        "backbone": built.run.method.backbone,
        "seed": built.run.seed,
        "best_epoch": train_contract.best_epoch(store, built.train),
        "train_seconds": float(log["train_seconds"].sum()),
    }
    curves = log.select(
        pl.lit(built.label).alias("method"),
        pl.lit(built.run.method.backbone).alias("backbone"),
        pl.lit(built.run.seed, dtype=pl.Int32).alias("seed"),
        "epoch",
        "valid_recall_20",
        "loss",
    )
    return [{**common, **row} for row in metrics.drop("method").to_dicts()], curves


def _summary(comparison: pl.DataFrame) -> pl.DataFrame:
    return comparison.group_by(
        "method", "backbone", "split", "metric", "k", maintain_order=True
    ).agg(
        pl.col("value").mean().alias("mean"),
        pl.col("value").std(ddof=1).fill_null(0.0).alias("std"),
        pl.len().cast(pl.Int32).alias("seeds"),
        pl.col("best_epoch").mean().alias("best_epoch"),
        pl.col("train_seconds").mean().alias("train_seconds"),
    )


def _user_values(
    store: ArtifactStore, runs: list[planning.RunArtifacts], metric: str, k: int
) -> np.ndarray:
    """Per test user, the metric averaged over the runs (seeds) of one method."""
    frames = [
        evaluate_contract.read_user_metrics(store, r.evaluate)
        .filter((pl.col("metric") == metric) & (pl.col("k") == k))
        .sort("user_idx")
        for r in runs
    ]
    users = frames[0]["user_idx"]
    if any(not f["user_idx"].equals(users) for f in frames):
        raise ValueError("the compared runs were evaluated on different test users")
    mean: np.ndarray = np.mean([f["value"].to_numpy() for f in frames], axis=0)
    return mean


def _significance(
    config: NeggenConfig,
    store: ArtifactStore,
    final: list[planning.RunArtifacts],
    summary: pl.DataFrame,
) -> list[PairedTest]:
    """Per backbone, NegGen against (a) the baseline of that backbone with the best valid
    Recall@20 (mean over seeds; nothing is chosen on test), (b) its `real_only` control and
    (c) its `random_intervention` control, on test Recall@20 and NDCG@20, each paired over the
    test users; the p-values adjusted with Holm over the whole family."""
    runs: dict[planning.Method, list[planning.RunArtifacts]] = {}
    for built in final:
        runs.setdefault(built.run.method, []).append(built)
    valid = dict(
        summary.filter(
            (pl.col("split") == "valid") & (pl.col("metric") == "recall") & (pl.col("k") == 20)
        )
        .select("method", "mean")
        .iter_rows()
    )
    tests = []
    for method, method_runs in runs.items():
        if not method.is_neggen or method.ablation != "none":
            continue
        baselines = [m for m in runs if m.backbone == method.backbone and not m.is_neggen]
        against = []
        if baselines:
            best = max(baselines, key=lambda m: valid[runs[m][0].label])  # first of ties
            against.append(("best baseline", best))
        for control in CONTROLS:
            if (other := planning.Method(method.backbone, f"neggen[{control}]")) in runs:
                against.append((control, other))
        for role, other in against:
            for metric, k in SIGNIFICANCE_METRICS:
                test = paired_test(
                    _user_values(store, method_runs, metric, k),
                    _user_values(store, runs[other], metric, k),
                    method=method_runs[0].label,
                    baseline=runs[other][0].label,
                    metric=f"{metric}@{k}",
                    resamples=config.compare.resamples,
                    seed=config.train.seed,
                )
                tests.append(replace(test, role=role))
    adjusted = holm([t.p_value for t in tests])
    return [replace(t, p_holm=p) for t, p in zip(tests, adjusted, strict=True)]


def _grid_frame(store: ArtifactStore, config: NeggenConfig, plan: planning.Plan) -> pl.DataFrame:
    rows = []
    for method, runs in plan.grid.items():
        for run in runs:
            built = planning.artifacts(config, run)
            report = evaluate_contract.read_report(store, built.evaluate)
            rows.append(
                {
                    "method": built.label,
                    "backbone": method.backbone,
                    "params": run.params_json,
                    "valid_recall_20": report["valid"]["recall@20"],
                    "valid_ndcg_20": report["valid"]["ndcg@20"],
                    "best_epoch": report["best_epoch"],
                    "chosen": run.params == plan.chosen[method],
                }
            )
    return pl.DataFrame(rows, schema=pl.Schema(GRID), orient="row")


def _search_rows(config: NeggenConfig, plan: planning.Plan) -> list[dict[str, Any]]:
    """Per searched method: points trained, the size of its grid, whose sampler it took."""
    rows = []
    for method, runs in plan.grid.items():
        inherited = dict(plan.inherited.get(method, ()))
        sampler = inherited.get("train.sampler")
        rows.append(
            {
                "method": planning.artifacts(config, runs[0]).label,
                "backbone": method.backbone,
                "points": len(runs),
                "grid_points": len(planning.grid_points(config, method)),
                "sampler_from": MethodId(method.backbone, sampler).label if sampler else None,
            }
        )
    return rows


def build(ctx: Build) -> dict[str, Any]:
    config, store, upstream, writer = ctx.config, ctx.store, ctx.upstream, ctx.writer
    plan = planning.built_plan(config)
    final = [planning.artifacts(config, run) for run in plan.final_runs()]
    tables = [_run_tables(store, built) for built in final]
    comparison = pl.DataFrame(
        [row for rows, _ in tables for row in rows], schema=pl.Schema(COMPARISON), orient="row"
    )
    summary = _summary(comparison).cast(pl.Schema(SUMMARY))
    curves = pl.concat([curve for _, curve in tables]).cast(pl.Schema(CURVES))
    grid = _grid_frame(store, config, plan)
    tests = _significance(config, store, final, summary)
    for name, frame in (
        ("comparison", comparison),
        ("summary", summary),
        ("grid", grid),
        ("curves", curves),
    ):
        writer.write_table(name, frame)

    negatives = read_negatives(store, upstream["negatives"])
    comparison_view = Comparison(
        config=config,
        comparison=comparison,
        summary=summary,
        grid=grid,
        curves=curves,
        tests=tests,
        chosen={f"{m.backbone}:{m.name}": dict(params) for m, params in plan.chosen.items()},
        search=_search_rows(config, plan),
        upstream={name: store.read_json(ref, "report.json") for name, ref in upstream.items()},
        negatives=negatives.filter(pl.col("kind") == "key"),
        items=item_texts(
            read_items(store, upstream["ingest"]),
            read_descriptions(store, upstream["attributes"]),
            None,
        ),
        versions={name: ref.version for name, ref in upstream.items()},
        software=software(),
        method_ids={built.label: built.method_id for built in final},
    )
    files = render(comparison_view)
    for name, data in files.items():
        writer.write_bytes(name, data)
    found = verdict(comparison_view)
    writer.write_json(
        "report.json",
        {
            "methods": summary["method"].unique(maintain_order=True).to_list(),
            "seeds": planning.seeds(config),
            "test": comparison_view.table("test"),
            "per_seed": {
                method: {
                    f"{metric}@20": dict(comparison_view.per_seed(method, metric, 20))
                    for metric in ("recall", "ndcg")
                }
                for method in comparison_view.methods()
            },
            "budget": config.compare.budget,
            "search": comparison_view.search,
            "chosen": comparison_view.chosen,
            "significance": [t.as_dict() for t in tests],
            "verdict": found,
            "software": comparison_view.software,
        },
    )
    return {
        "runs": len(final),
        "grid_runs": grid.height,
        "methods": summary["method"].n_unique(),
        "verdict": found,
    }


SPEC = StageSpec("compare", DATA_STAGES, SCHEMA_VERSION, TABLES, version_config, build=build)


def result_tables(store: ArtifactStore, ref: ArtifactRef) -> dict[str, pl.DataFrame]:
    """The comparison, summary, grid and curves tables without wall-clock columns: what two builds
    of one comparison agree on, whatever task runner trained their runs."""
    frames = {name: store.read_frame(ref, name, schema) for name, schema in TABLES.items()}
    return {
        name: frame.select(c for c in frame.columns if not c.endswith("_seconds"))
        for name, frame in frames.items()
    }
