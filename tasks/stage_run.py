"""Running a neggen_core stage inside a Prefect task, with its outcome in the run's log."""

from __future__ import annotations

from collections.abc import Mapping

from prefect import get_run_logger

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from neggen_core.stages import StageSpec, open_store, run_stage


def run_logged(
    config: NeggenConfig, stage: str | StageSpec, upstream: Mapping[str, ArtifactRef]
) -> ArtifactRef:
    """Run (or skip) one stage and say which in the run log."""
    logger = get_run_logger()
    outcome = run_stage(config, stage, upstream)
    stage = stage if isinstance(stage, str) else stage.name
    if outcome.skipped:
        logger.info(
            "%s: version %s already built at %s; skipped (nothing rewritten)",
            stage,
            outcome.ref.version,
            outcome.ref.uri,
        )
    else:
        manifest = open_store(config).manifest(stage, outcome.ref.version)
        rows = ", ".join(f"{name} {table.rows:,}" for name, table in manifest.tables.items())
        logger.info(
            "%s: built version %s in %.1f s at %s (%s)",
            stage,
            outcome.ref.version,
            outcome.seconds,
            outcome.ref.uri,
            rows,
        )
    return outcome.ref
