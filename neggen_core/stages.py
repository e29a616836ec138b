"""The pipeline's stages, their versions, and running one with skip-if-built.

A stage is a pure build function plus what its version depends on. `run_stage` computes the
version, skips the stage when that artifact exists, and otherwise builds it through an
`ArtifactWriter`, so that a crash leaves no partial artifact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pyarrow as pa

from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter, compute_version
from neggen_core.attributes import stage as attributes_stage
from neggen_core.config import NeggenConfig
from neggen_core.embeddings import stage as embeddings_stage
from neggen_core.errors import ArtifactError, ConfigError
from neggen_core.evaluation import stage as evaluate_stage
from neggen_core.ingest import stage as ingest_stage
from neggen_core.negatives import stage as negatives_stage
from neggen_core.training import stage as train_stage

log = logging.getLogger(__name__)

BuildFn = Callable[
    [NeggenConfig, ArtifactStore, Mapping[str, ArtifactRef], ArtifactWriter], dict[str, Any]
]


@dataclass(frozen=True)
class StageSpec:
    """One stage: its upstream stages, tables, version inputs and build function."""

    name: str
    upstream: tuple[str, ...]
    schema_version: int
    tables: Mapping[str, pa.Schema]
    version_config: Callable[[NeggenConfig], dict[str, Any]]
    build: BuildFn
    resumable: bool = False


def _spec(
    name: str, module: ModuleType, upstream: tuple[str, ...], resumable: bool = False
) -> StageSpec:
    """A stage from its module's SCHEMA_VERSION, TABLES, version_config and build."""
    return StageSpec(
        name=name,
        upstream=upstream,
        schema_version=module.SCHEMA_VERSION,
        tables=module.TABLES,
        version_config=module.version_config,
        build=module.build,
        resumable=resumable,
    )


# name, its module, upstream stages, resumable (part files survive a crash)
STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        _spec("ingest", ingest_stage, ()),
        _spec("attributes", attributes_stage, ("ingest",), True),
        _spec("negatives", negatives_stage, ("ingest", "attributes"), True),
        _spec("embeddings", embeddings_stage, ("ingest", "attributes", "negatives"), True),
        _spec("train", train_stage, ("ingest", "embeddings"), True),
        _spec("evaluate", evaluate_stage, ("ingest", "embeddings", "train")),
    )
}
STAGE_ORDER: tuple[str, ...] = tuple(STAGES)


@dataclass(frozen=True)
class StageOutcome:
    ref: ArtifactRef
    skipped: bool
    seconds: float


def open_store(config: NeggenConfig) -> ArtifactStore:
    return ArtifactStore(config.artifacts.root, config.dataset.name)


def select_stages(from_stage: str | None = None, until_stage: str | None = None) -> tuple[str, ...]:
    """The stages from `from_stage` to `until_stage`, inclusive, in pipeline order."""
    for name, value in (("--from", from_stage), ("--until", until_stage)):
        if value is not None and value not in STAGES:
            raise ConfigError(f"{name} {value!r}: unknown stage (stages: {', '.join(STAGE_ORDER)})")
    start = STAGE_ORDER.index(from_stage) if from_stage else 0
    stop = STAGE_ORDER.index(until_stage) + 1 if until_stage else len(STAGE_ORDER)
    if start >= stop:
        raise ConfigError(f"--from {from_stage} comes after --until {until_stage}")
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
            {up: versions[up] for up in spec.upstream},
        )
    return versions


def built_ref(config: NeggenConfig, stage: str) -> ArtifactRef:
    """The artifact of `stage` under this config, which must exist (for `--from`)."""
    store = open_store(config)
    version = plan_versions(config)[stage]
    if not store.exists(stage, version):
        raise ArtifactError(
            f"{store.path(stage, version)}: stage {stage!r} is not built for this config; "
            f"run `neggen run --until {stage}` first, or start earlier than --from"
        )
    return store.ref(stage, version)


def spec_of(stage: str | StageSpec) -> StageSpec:
    return STAGES[stage] if isinstance(stage, str) else stage


def stage_version(
    config: NeggenConfig, stage: str | StageSpec, upstream: Mapping[str, ArtifactRef]
) -> str:
    """The version of `stage` built from these upstream artifacts under this config."""
    spec = spec_of(stage)
    return compute_version(
        spec.name,
        spec.schema_version,
        spec.version_config(config),
        {name: upstream[name].version for name in spec.upstream},
    )


def run_stage(
    config: NeggenConfig,
    stage: str | StageSpec,
    upstream: Mapping[str, ArtifactRef],
    version: str | None = None,
) -> StageOutcome:
    """Build one stage (a pipeline stage's name, or the spec of another) unless its artifact
    already exists."""
    spec = spec_of(stage)
    stage = spec.name
    store = open_store(config)
    section = spec.version_config(config)
    upstream_versions = {name: upstream[name].version for name in spec.upstream}
    version = version or compute_version(stage, spec.schema_version, section, upstream_versions)
    started = time.perf_counter()
    if store.exists(stage, version):
        return StageOutcome(store.ref(stage, version), skipped=True, seconds=0.0)
    writer = store.writer(
        stage,
        version,
        schemas=spec.tables,
        schema_version=spec.schema_version,
        config=section,
        upstream=upstream_versions,
        resume=spec.resumable,
    )
    info = spec.build(config, store, upstream, writer)
    ref = writer.commit(info)
    return StageOutcome(ref, skipped=False, seconds=round(time.perf_counter() - started, 3))


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


def _artifact_status(store: ArtifactStore, name: str, expected: str) -> dict[str, Any]:
    version = expected
    if not store.exists(name, expected):
        built = store.versions(name)
        version = built[-1] if built else expected
    complete = store.exists(name, version) and not store.verify(name, version)
    return {
        "version": version,
        "path": store.ref(name, version).uri,
        "complete": complete,
        "up_to_date": complete and version == expected,
        "expected_version": expected,
    }


def status(config: NeggenConfig, extra: Sequence[StageSpec] = ()) -> dict[str, Any]:
    """Each stage's artifact: version, path, whether it is complete and up to date; each
    `extra` stage (the comparison) under its own name."""
    store = open_store(config)
    versions = plan_versions(config, extra)
    report: dict[str, Any] = {
        "dataset": config.dataset.name,
        "root": config.artifacts.root,
        "stages": {name: _artifact_status(store, name, versions[name]) for name in STAGE_ORDER},
    }
    for spec in extra:
        report[spec.name] = _artifact_status(store, spec.name, versions[spec.name])
    return report
