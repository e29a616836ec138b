"""The negatives task."""

from __future__ import annotations

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from tasks.stage_run import ArtifactVersion, run_logged


@task(name="negatives", cache_policy=ArtifactVersion(stage="negatives"))
def negatives(config: NeggenConfig, ingest: ArtifactRef, attributes: ArtifactRef) -> ArtifactRef:
    """Positives + attributes -> negatives (checked, with status and reason) and a report."""
    return run_logged(config, "negatives", {"ingest": ingest, "attributes": attributes})
