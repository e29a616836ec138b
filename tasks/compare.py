"""The comparison's tasks: one compared run (train + evaluate), a method's search result, and the
comparison artifact with its report as Prefect artifacts."""

from __future__ import annotations

import re
from collections.abc import Mapping

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from neggen_core.artifacts.schemas import SUMMARY
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.compare import plan as planning
from neggen_core.compare.stage import SPEC
from neggen_core.config import NeggenConfig
from neggen_core.pipeline.stages import open_store
from neggen_core.threads import use_threads
from tasks.stage_run import ArtifactVersion, artifact_key, run_logged


@task(name="run", cache_policy=NO_CACHE)
def train_and_evaluate(
    config: NeggenConfig, run: planning.Run, data: Mapping[str, ArtifactRef], threads: int
) -> float:
    """One compared run: train, then evaluate (each skipped when built) with `threads` torch
    threads; returns its valid Recall@20."""
    use_threads(threads)
    built = planning.artifacts(config, run)
    upstream = {"ingest": data["ingest"], "embeddings": data["embeddings"]}
    trained = run_logged(built.config, "train", upstream)
    run_logged(built.config, "evaluate", {**upstream, "train": trained})
    return planning.valid_score(open_store(config), built)


@task(name="chosen", cache_policy=NO_CACHE)
def record_choice(
    config: NeggenConfig, method: planning.Method, rows: list[dict[str, object]]
) -> None:
    """Log a method's search (each point's valid Recall@20) and keep it as a table artifact."""
    chosen = next(row["point"] for row in rows if row["chosen"])
    get_run_logger().info("%s on %s: chose %s", method.name, method.backbone, chosen)
    create_table_artifact(
        table=rows,
        key=artifact_key("search", config.dataset.name, method.backbone, method.name),
        description=f"{method.name} on {method.backbone}: valid Recall@20 of each searched point",
    )


@task(name="compare", cache_policy=ArtifactVersion(stage=SPEC))
def compare(config: NeggenConfig, upstream: dict[str, ArtifactRef]) -> ArtifactRef:
    """The compared runs -> the comparison table, its statistics and the report."""
    ref = run_logged(config, SPEC, upstream)
    store = open_store(config)
    report = store.read_bytes(ref, "report.md").decode("utf-8")
    # Prefect's UI cannot show the PNG files: link them instead (report.html has them inline)
    report = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", rf"[\1]({ref.uri}/\2)", report)
    key = artifact_key("neggen-compare", config.dataset.name)
    create_markdown_artifact(
        markdown=report, key=key, description=f"NegGen comparison report ({ref.uri})"
    )
    summary = store.read_frame(ref, "summary", SUMMARY)
    rows = (
        summary.filter(summary["split"] == "test")
        .select("method", "metric", "k", "mean", "std", "seeds")
        .to_dicts()
    )
    create_table_artifact(
        table=rows, key=f"{key}-table", description="Test metrics, mean and std over seeds"
    )
    return ref
