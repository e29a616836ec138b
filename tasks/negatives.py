"""The negatives task."""

from __future__ import annotations

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from tasks.stage_run import ArtifactVersion, ShardRun, run_logged


@task(name="negatives", cache_policy=ArtifactVersion(stage="negatives"))
def negatives(
    config: NeggenConfig,
    ingest: ArtifactRef,
    attributes: ArtifactRef,
    shards: ShardRun | None = None,
    limit: str | None = None,
) -> ArtifactRef:
    """Positives + attributes -> negatives (checked, with status and reason) and a report."""
    upstream = {"ingest": ingest, "attributes": attributes}
    return run_logged(config, "negatives", upstream, shards, limit)
