"""The attributes task."""

from __future__ import annotations

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from tasks.stage_run import ArtifactVersion, ShardRun, run_logged


@task(name="attributes", cache_policy=ArtifactVersion(stage="attributes"))
def attributes(
    config: NeggenConfig,
    ingest: ArtifactRef,
    shards: ShardRun | None = None,
    limit: str | None = None,
) -> ArtifactRef:
    """Items -> attributes (with key features), descriptions, key_features, report; after its
    `shards`, the batches left and the key features, holding a
    slot of the LLM server's global concurrency limit `limit` (when there is one)."""
    return run_logged(config, "attributes", {"ingest": ingest}, shards, limit)
