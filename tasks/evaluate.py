"""The evaluate task."""

from __future__ import annotations

from prefect import task

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from tasks.stage_run import ArtifactVersion, run_logged


@task(name="evaluate", cache_policy=ArtifactVersion(stage="evaluate"))
def evaluate(
    config: NeggenConfig, ingest: ArtifactRef, embeddings: ArtifactRef, train: ArtifactRef
) -> ArtifactRef:
    """The trained model -> valid and test metrics, per-user metrics, top-K recommendations."""
    return run_logged(
        config, "evaluate", {"ingest": ingest, "embeddings": embeddings, "train": train}
    )
