"""The pipeline's stages, their versions, and running one with skip-if-built.

A stage is a pure build function (or, for the LLM and embedding stages, a sharded job) plus what
its version depends on. `run_stage` computes the version, skips the stage when that artifact
exists, and otherwise builds it through an `ArtifactWriter`, so that a crash leaves no partial
artifact. `pending_shards` and `build_shard` let other workers build a sharded stage's batches
first; `run_stage` then builds what is left and finishes it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
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
from neggen_core.redaction import redact
from neggen_core.sharding import JobFactory, ShardedJob, Stats, pending, total
from neggen_core.training import stage as train_stage

log = logging.getLogger(__name__)

BuildFn = Callable[
    [NeggenConfig, ArtifactStore, Mapping[str, ArtifactRef], ArtifactWriter], dict[str, Any]
]


@dataclass(frozen=True)
class StageSpec:
    """One stage: its upstream stages, tables, version inputs, and either a build function or
    (a sharded stage) a job."""

    name: str
    upstream: tuple[str, ...]
    schema_version: int
    tables: Mapping[str, pa.Schema]
    version_config: Callable[[NeggenConfig], dict[str, Any]]
    build: BuildFn | None = None
    job: JobFactory | None = None
    resumable: bool = False
    reads: Callable[[NeggenConfig], tuple[str, ...]] | None = None

    def __post_init__(self) -> None:
        if (self.build is None) == (self.job is None):
            raise ValueError(f"stage {self.name!r}: give a build function or a job, not both")

    def inputs(self, config: NeggenConfig) -> tuple[str, ...]:
        """The upstream stages this config's build reads, which alone make its version: a
        baseline's train reads no embeddings, so a new negatives round leaves it as it is."""
        return self.upstream if self.reads is None else self.reads(config)


def _spec(
    name: str, module: ModuleType, upstream: tuple[str, ...], kind: str = "whole"
) -> StageSpec:
    """A stage from its module's SCHEMA_VERSION, TABLES, version_config, and `build` (kind
    "whole" or "resumable": part files survive a crash) or `Job` (kind "sharded")."""
    return StageSpec(
        name=name,
        upstream=upstream,
        schema_version=module.SCHEMA_VERSION,
        tables=module.TABLES,
        version_config=module.version_config,
        build=None if kind == "sharded" else module.build,
        job=module.Job if kind == "sharded" else None,
        resumable=kind != "whole",
        reads=getattr(module, "reads", None),
    )


STAGES: dict[str, StageSpec] = {
    spec.name: spec
    for spec in (
        _spec("ingest", ingest_stage, ()),
        _spec("attributes", attributes_stage, ("ingest",), "sharded"),
        _spec("negatives", negatives_stage, ("ingest", "attributes"), "sharded"),
        _spec("embeddings", embeddings_stage, ("ingest", "attributes", "negatives"), "sharded"),
        _spec("train", train_stage, ("ingest", "embeddings"), "resumable"),
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
            {up: versions[up] for up in spec.inputs(config)},
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


@dataclass(frozen=True)
class _Inputs:
    """What a stage's version is made of, computed once (ingest fingerprints its input files)."""

    section: dict[str, Any]
    upstream: dict[str, str]
    version: str


def _inputs(config: NeggenConfig, spec: StageSpec, upstream: Mapping[str, ArtifactRef]) -> _Inputs:
    section = spec.version_config(config)
    versions = {name: upstream[name].version for name in spec.inputs(config)}
    return _Inputs(
        section, versions, compute_version(spec.name, spec.schema_version, section, versions)
    )


def stage_version(
    config: NeggenConfig, stage: str | StageSpec, upstream: Mapping[str, ArtifactRef]
) -> str:
    """The version of `stage` built from these upstream artifacts under this config."""
    return _inputs(config, spec_of(stage), upstream).version


def _writer(spec: StageSpec, store: ArtifactStore, inputs: _Inputs) -> ArtifactWriter:
    return store.writer(
        spec.name,
        inputs.version,
        schemas=spec.tables,
        schema_version=spec.schema_version,
        config=inputs.section,
        upstream=inputs.upstream,
        resume=spec.resumable,
    )


# per thread: the sharded job it last used, and what it was made from
_held = threading.local()


def run_stage(
    config: NeggenConfig,
    stage: str | StageSpec,
    upstream: Mapping[str, ArtifactRef],
    shard_stats: Sequence[Stats] = (),
) -> StageOutcome:
    """Build one stage (a pipeline stage's name, or the spec of another) unless its artifact
    already exists. A sharded stage builds the batches no shard wrote and finishes the artifact;
    `shard_stats` are the counters the shards returned, for its report."""
    spec = spec_of(stage)
    store = open_store(config)
    inputs = _inputs(config, spec, upstream)
    started = time.perf_counter()
    purpose = f"{spec.name} {inputs.version}"
    with store.lock(spec.name, inputs.version, purpose, config.artifacts.lock_timeout_s):
        for ref in upstream.values():
            check_intact(store, ref.stage, ref.version)
        if store.exists(spec.name, inputs.version):
            check_intact(store, spec.name, inputs.version)
            return StageOutcome(store.ref(spec.name, inputs.version), skipped=True, seconds=0.0)
        writer = _writer(spec, store, inputs)
        if spec.job is not None:
            try:
                job = _held_job(config, spec, upstream, inputs.version)
                built = job.build(writer, range(job.batches))
                info = job.finish(writer, total([*shard_stats, built]))
            finally:
                _held.job = None
        else:
            assert spec.build is not None
            info = spec.build(config, store, upstream, writer)
        ref = writer.commit(info)
    return StageOutcome(ref, skipped=False, seconds=round(time.perf_counter() - started, 3))


def remove_for_rebuild(config: NeggenConfig, stages: Sequence[str]) -> list[str]:
    """Remove the artifacts these stages have under this config (each under its lock), so
    that the run builds them again; returns the folders removed."""
    store = open_store(config)
    versions = plan_versions(config)
    removed = []
    for stage in stages:
        if stage not in versions:
            raise ConfigError(f"--rebuild {stage}: no such stage (stages: {STAGE_ORDER})")
    for stage in stages:
        version = versions[stage]
        with store.lock(stage, version, f"rebuild {stage}", config.artifacts.lock_timeout_s):
            if store.exists(stage, version) or store.fs.exists(store.path(stage, version)):
                store.remove(stage, version)
                _verified.discard((store.root, store.dataset, stage, version))
                removed.append(store.ref(stage, version).uri)
    return removed


_verified: set[tuple[str, str, str, str]] = set()


def is_intact(store: ArtifactStore, stage: str, version: str) -> bool:
    """Whether an artifact exists with every file as its manifest lists (once per process)."""
    try:
        check_intact(store, stage, version)
    except ArtifactError:
        return False
    return True


def check_intact(store: ArtifactStore, stage: str, version: str) -> None:
    """An `ArtifactError` naming the damage and the fix when an artifact's files are not the
    ones its manifest lists (checked once per process)."""
    key = (store.root, store.dataset, stage, version)
    if key in _verified:
        return
    problems = store.verify(stage, version)
    if problems:
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise ArtifactError(
            f"{store.ref(stage, version).uri} is damaged: {'; '.join(problems[:2])}{more}. "
            f"Rebuild it with `neggen run --rebuild {stage}` (or remove that folder)"
        )
    _verified.add(key)


def _held_job(
    config: NeggenConfig, spec: StageSpec, upstream: Mapping[str, ArtifactRef], version: str
) -> ShardedJob:
    """A sharded stage's job, kept for the next shard this thread builds: reading the stage's
    inputs and loading a model happen once per worker thread, not once per shard. Threads share
    no job (a job's backend and encoder are not thread-safe); `run_stage` drops it once the
    stage is finished."""
    if spec.job is None:
        raise ConfigError(f"stage {spec.name!r} is not sharded")
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()
    key = (spec.name, version, digest)
    if getattr(_held, "key", None) != key or getattr(_held, "job", None) is None:
        _held.job, _held.key = spec.job(config, open_store(config), upstream), key
    job: ShardedJob = _held.job
    return job


def pending_shards(
    config: NeggenConfig, stage: str | StageSpec, upstream: Mapping[str, ArtifactRef], shards: int
) -> list[range]:
    """The shards (runs of batches) of a sharded stage with a batch still to build, at most
    `shards` of them in all; none when its artifact exists."""
    spec = spec_of(stage)
    store = open_store(config)
    inputs = _inputs(config, spec, upstream)
    if store.exists(spec.name, inputs.version):
        return []
    job = _held_job(config, spec, upstream, inputs.version)
    return pending(job, _writer(spec, store, inputs), shards)


def build_shard(
    config: NeggenConfig,
    stage: str | StageSpec,
    upstream: Mapping[str, ArtifactRef],
    numbers: Sequence[int],
) -> Stats:
    """Build the batches `numbers` of a sharded stage (those not written yet) into its staging
    folder; the counters of the work done."""
    spec = spec_of(stage)
    inputs = _inputs(config, spec, upstream)
    job = _held_job(config, spec, upstream, inputs.version)
    return job.build(_writer(spec, open_store(config), inputs), numbers)


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


def _artifact_status(
    config: NeggenConfig, store: ArtifactStore, spec: StageSpec, expected: str, damaged: set[str]
) -> dict[str, Any]:
    """One stage's status; `damaged` collects the stages whose artifact (at the expected
    version) is damaged or rests on a damaged one."""
    name, version = spec.name, expected
    if not store.exists(name, expected):
        built = store.versions(name)
        version = built[-1] if built else expected
    exists = store.exists(name, version)
    problems = store.verify(name, version) if exists else []
    upstream = [up for up in spec.inputs(config) if up in damaged]
    if exists and version == expected and (problems or upstream):
        damaged.add(name)
    complete = exists and not problems
    return {
        "version": version,
        "path": store.ref(name, version).uri,
        "complete": complete,
        "up_to_date": complete and version == expected and not upstream,
        "expected_version": expected,
        "damaged": problems,
        "damaged_upstream": upstream,
    }


def status(config: NeggenConfig, extra: Sequence[StageSpec] = ()) -> dict[str, Any]:
    """Each stage's artifact: version, path, whether it is complete (every file as its manifest
    says, checksums included) and up to date (nor resting on a damaged artifact); each `extra`
    stage (the comparison) under its own name."""
    store = open_store(config)
    versions = plan_versions(config, extra)
    damaged: set[str] = set()
    report: dict[str, Any] = {
        "dataset": config.dataset.name,
        "root": redact(config.artifacts.root),
        "stages": {
            name: _artifact_status(config, store, STAGES[name], versions[name], damaged)
            for name in STAGE_ORDER
        },
    }
    for spec in extra:
        report[spec.name] = _artifact_status(config, store, spec, versions[spec.name], damaged)
    report["damaged"] = sorted(damaged, key=[*STAGE_ORDER, *(s.name for s in extra)].index)
    return report
