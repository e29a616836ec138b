"""The attributes task."""

from __future__ import annotations

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from tasks.stage_run import ArtifactVersion, run_logged


@task(name="attributes", cache_policy=ArtifactVersion(stage="attributes"))
def attributes(config: NeggenConfig, ingest: ArtifactRef) -> ArtifactRef:
    """Items -> attributes (with key features), descriptions, key_features, report."""
    return run_logged(config, "attributes", {"ingest": ingest})
