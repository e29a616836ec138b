"""The `neggen` flow: the pipeline's stages as Prefect tasks, wired in order."""

from __future__ import annotations

from prefect import flow

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import load_config
from neggen_core.stages import select_stages
from tasks.ingest import ingest


@flow(name="neggen")
def neggen(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    from_stage: str | None = None,
    until_stage: str | None = None,
) -> dict[str, str]:
    """Run the pipeline's stages from `from_stage` to `until_stage`; returns their artifact URIs."""
    config = load_config(config_path, overrides or [])
    selected = select_stages(from_stage, until_stage)
    refs: dict[str, ArtifactRef] = {}
    if "ingest" in selected:
        refs["ingest"] = ingest(config)
    return {name: ref.uri for name, ref in refs.items()}
