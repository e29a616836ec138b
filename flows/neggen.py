"""The `neggen` flow: the pipeline's stages as Prefect tasks, wired in order; the LLM and
embedding stages mapped over shards on the configured task runner first."""

from __future__ import annotations

from prefect import flow, get_run_logger

from neggen_core import devices
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import load_config, with_settings
from neggen_core.errors import ConfigError
from neggen_core.pipeline.run import built_ref, supersede_for_rebuild
from neggen_core.pipeline.stages import STAGES, next_negatives_round, select_stages
from tasks.attributes import attributes
from tasks.embeddings import embeddings
from tasks.evaluate import evaluate
from tasks.ingest import ingest
from tasks.negatives import negatives
from tasks.shards import ShardMap
from tasks.stage_run import llm_limit
from tasks.train import train

# the stages mapped over item shards before their own task finishes them, in pipeline order
SHARDED = {"attributes": attributes, "negatives": negatives, "embeddings": embeddings}


@flow(name="neggen")
def neggen(
    config_path: str | None = None,
    overrides: list[str] | None = None,
    from_stage: str | None = None,
    until_stage: str | None = None,
    regenerate_negatives: bool = False,
    rebuild: list[str] | None = None,
) -> dict[str, str]:
    """Run the pipeline's stages from `from_stage` to `until_stage`; returns their artifact URIs.

    A stage before `from_stage` is not run: its artifact for this config must already exist.
    `regenerate_negatives` builds the next negatives round (one past the highest built on the
    same ingest and attributes) and what depends on it. `rebuild` names stages whose artifacts
    for this config are moved aside first (kept until `neggen gc`), and so built again (a
    damaged one, say). The config is given by path and overrides, never as a loaded object:
    flow parameters go to the Prefect API, and a loaded config holds the artifact root and
    input URLs unredacted."""
    config = load_config(config_path, overrides or [])
    selected = select_stages(from_stage, until_stage)
    devices.check(config, selected)  # a missing GPU fails now, not after the LLM stages
    for aside in supersede_for_rebuild(config, rebuild or []):
        get_run_logger().info("moved %s aside to build it again (kept until `neggen gc`)", aside)
    if regenerate_negatives:
        if "negatives" not in selected:
            raise ConfigError("regenerate_negatives needs the negatives stage in --from/--until")
        next_round = next_negatives_round(config)
        config = with_settings(config, {"negatives.round": next_round})
        get_run_logger().info("regenerating negatives: round %d", next_round)
    built: dict[str, ArtifactRef] = {}

    def upstream(*stages: str) -> dict[str, ArtifactRef]:
        return {s: built[s] if s in built else built_ref(config, s) for s in stages}

    with ShardMap(config) as shards:
        if "ingest" in selected:
            built["ingest"] = ingest(config)
        for stage, sharded_task in SHARDED.items():
            if stage in selected:
                refs = upstream(*STAGES[stage].upstream)
                limit = llm_limit(config, stage)  # checked once: the shards and the finish
                done = shards.build(config, stage, refs, limit)
                built[stage] = sharded_task(config, **refs, shards=done, limit=limit)
    if "train" in selected:
        built["train"] = train(config, **upstream("ingest", "embeddings"))
    if "evaluate" in selected:
        built["evaluate"] = evaluate(config, **upstream("ingest", "embeddings", "train"))
    return {name: ref.uri for name, ref in built.items()}
