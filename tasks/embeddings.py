"""The embeddings task."""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from neggen_core.sharding import Stats
from tasks.stage_run import ArtifactVersion, run_logged


@task(name="embeddings", cache_policy=ArtifactVersion(stage="embeddings"))
def embeddings(
    config: NeggenConfig,
    ingest: ArtifactRef,
    attributes: ArtifactRef,
    negatives: ArtifactRef,
    shard_stats: Sequence[Stats] = (),
    limit: str | None = None,
) -> ArtifactRef:
    """Items + negatives -> text vectors, image features, a FAISS index, near-duplicate flags."""
    upstream = {"ingest": ingest, "attributes": attributes, "negatives": negatives}
    return run_logged(config, "embeddings", upstream, shard_stats, limit)
