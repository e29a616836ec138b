"""The embeddings task."""

from __future__ import annotations

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from tasks.stage_run import ArtifactVersion, ShardRun, run_logged


@task(name="embeddings", cache_policy=ArtifactVersion(stage="embeddings"))
def embeddings(
    config: NeggenConfig,
    ingest: ArtifactRef,
    attributes: ArtifactRef,
    negatives: ArtifactRef,
    shards: ShardRun | None = None,
    limit: str | None = None,
) -> ArtifactRef:
    """Items + negatives -> text vectors, image features, a FAISS index, near-duplicate flags."""
    upstream = {"ingest": ingest, "attributes": attributes, "negatives": negatives}
    return run_logged(config, "embeddings", upstream, shards, limit)
