"""The compare task: the comparison artifact, and its report as Prefect artifacts."""

from __future__ import annotations

import re

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from neggen_core.artifacts.schemas import SUMMARY
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.compare.stage import SPEC
from neggen_core.config import NeggenConfig
from neggen_core.stages import open_store
from tasks.stage_run import ArtifactVersion, artifact_key, run_logged


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
