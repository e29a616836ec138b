"""The attributes task."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from tasks.stage_run import run_logged


@task(name="attributes", cache_policy=NO_CACHE)
def attributes(config: NeggenConfig, ingest: ArtifactRef) -> ArtifactRef:
    """Items -> attributes (with key features), descriptions, key_features, report."""
    return run_logged(config, "attributes", {"ingest": ingest})
