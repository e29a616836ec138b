"""The ingest task."""

from __future__ import annotations

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from tasks.stage_run import ArtifactVersion, run_logged


@task(name="ingest", cache_policy=ArtifactVersion(stage="ingest"))
def ingest(config: NeggenConfig) -> ArtifactRef:
    """Raw Amazon files -> users, items, interactions (with split), quarantine, report."""
    return run_logged(config, "ingest", {})
