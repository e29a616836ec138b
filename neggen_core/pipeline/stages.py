"""The pipeline's stages in order, each the `SPEC` its own `job.py` declares, and the versions
a config gives them."""

from __future__ import annotations

from collections.abc import Sequence

from neggen_core.artifacts.store import ArtifactStore, compute_version
from neggen_core.attributes.job import SPEC as ATTRIBUTES
from neggen_core.config import NeggenConfig
from neggen_core.embeddings.job import SPEC as EMBEDDINGS
from neggen_core.errors import ConfigError
from neggen_core.evaluate.job import SPEC as EVALUATE
from neggen_core.ingest.job import SPEC as INGEST
from neggen_core.negatives.job import SPEC as NEGATIVES
from neggen_core.pipeline.spec import StageSpec
from neggen_core.train.job import SPEC as TRAIN

STAGES: dict[str, StageSpec] = {
    spec.name: spec for spec in (INGEST, ATTRIBUTES, NEGATIVES, EMBEDDINGS, TRAIN, EVALUATE)
}
STAGE_ORDER: tuple[str, ...] = tuple(STAGES)


def spec_of(stage: str | StageSpec) -> StageSpec:
    return STAGES[stage] if isinstance(stage, str) else stage


def open_store(config: NeggenConfig) -> ArtifactStore:
    return ArtifactStore(config.artifacts.root, config.dataset.name)


def select_stages(first: str | None = None, last: str | None = None) -> tuple[str, ...]:
    """The stages from `first` to `last`, inclusive, in pipeline order."""
    for bound, value in (("first", first), ("last", last)):
        if value is not None and value not in STAGES:
            raise ConfigError(
                f"{bound} stage {value!r}: unknown stage (stages: {', '.join(STAGE_ORDER)})"
            )
    start = STAGE_ORDER.index(first) if first else 0
    stop = STAGE_ORDER.index(last) + 1 if last else len(STAGE_ORDER)
    if start >= stop:
        raise ConfigError(f"stage {first!r} comes after stage {last!r}: nothing to run")
    return STAGE_ORDER[start:stop]


def plan_versions(config: NeggenConfig, extra: Sequence[StageSpec] = ()) -> dict[str, str]:
    """The version every stage (and each `extra` one) has under this config, computed without
    building anything."""
    versions: dict[str, str] = {}
    for spec in (*STAGES.values(), *extra):
        versions[spec.name] = compute_version(
            spec.name,
            spec.schema_version,
            spec.version_config(config),
            {up: versions[up] for up in spec.inputs(config)},
        )
    return versions


def next_negatives_round(config: NeggenConfig) -> int:
    """One past the highest negatives round built on this config's ingest and attributes (and
    past `negatives.round`): what a regeneration of the negatives builds."""
    versions = plan_versions(config)
    store = open_store(config)
    reused = {"ingest": versions["ingest"], "attributes": versions["attributes"]}
    rounds = [config.negatives.round]
    for version in store.versions("negatives"):
        manifest = store.manifest("negatives", version)
        if manifest.upstream == reused:
            rounds.append(int(manifest.config["negatives"]["round"]))
    return max(rounds) + 1
