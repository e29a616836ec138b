"""The negatives task."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from neggen_core.sharding import Stats
from tasks.stage_run import ArtifactVersion, run_logged


@task(name="negatives", cache_policy=ArtifactVersion(stage="negatives"))
def negatives(
    config: NeggenConfig,
    ingest: ArtifactRef,
    attributes: ArtifactRef,
    shard_stats: Sequence[Stats] = (),
    limit: str | None = None,
) -> ArtifactRef:
    """Positives + attributes -> negatives (checked, with status and reason) and a report."""
    upstream = {"ingest": ingest, "attributes": attributes}
    return run_logged(config, "negatives", upstream, shard_stats, limit)
