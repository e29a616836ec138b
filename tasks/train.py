"""The train task."""

from __future__ import annotations

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from tasks.stage_run import ArtifactVersion, run_logged


@task(name="train", cache_policy=ArtifactVersion(stage="train"))
def train(config: NeggenConfig, ingest: ArtifactRef, embeddings: ArtifactRef) -> ArtifactRef:
    """Split + features -> the best model on valid Recall@20 and its training log."""
    return run_logged(config, "train", {"ingest": ingest, "embeddings": embeddings})
