"""Running one stage: its version, the one decision whether it is already built, and building it
through an `ArtifactWriter` (so a crash leaves no partial artifact).

`pending_shards` and `build_shard` let other workers build a sharded stage's batches first;
`run_stage` then builds what is left and finishes it.
"""

from __future__ import annotations

import hashlib
import posixpath
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from neggen_core.artifacts.store import (
    ArtifactRef,
    ArtifactStore,
    ArtifactWriter,
    compute_version,
    uri_of,
)
from neggen_core.config import NeggenConfig
from neggen_core.errors import ArtifactError, ConfigError
from neggen_core.pipeline.spec import Build, StageSpec
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions, spec_of
from neggen_core.sharding import ShardedJob, Stats, pending, total


@dataclass(frozen=True)
class StageOutcome:
    ref: ArtifactRef
    skipped: bool
    seconds: float


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


def built(store: ArtifactStore, stage: str, version: str) -> ArtifactRef | None:
    """The skip decision: the artifact when it exists with every file as its manifest lists,
    None when it is to be built. A damaged artifact is an `ArtifactError` naming the fix, never
    built over silently."""
    if not store.exists(stage, version):
        return None
    check_intact(store, stage, version)
    return store.ref(stage, version)


def built_artifact(
    config: NeggenConfig, stage: str | StageSpec, upstream: Mapping[str, ArtifactRef]
) -> ArtifactRef | None:
    """`built` for the version of `stage` on these upstream artifacts."""
    spec = spec_of(stage)
    return built(open_store(config), spec.name, stage_version(config, spec, upstream))


def built_ref(config: NeggenConfig, stage: str) -> ArtifactRef:
    """The artifact of `stage` under this config, which must be built and intact (a run that
    starts at a later stage reads it)."""
    store = open_store(config)
    version = plan_versions(config)[stage]
    ref = built(store, stage, version)
    if ref is None:
        raise ArtifactError(
            f"{store.path(stage, version)}: stage {stage!r} is not built for this config; "
            f"build it first (`neggen run --until {stage}`), or start the run earlier"
        )
    return ref


def _writer(spec: StageSpec, store: ArtifactStore, inputs: _Inputs) -> ArtifactWriter:
    return store.writer(
        spec.name,
        inputs.version,
        schemas=spec.tables,
        schema_version=spec.schema_version,
        config=inputs.section,
        upstream=inputs.upstream,
        resume=spec.keeps_parts,
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
        done = built(store, spec.name, inputs.version)
        if done is not None:
            return StageOutcome(done, skipped=True, seconds=0.0)
        writer = _writer(spec, store, inputs)
        if spec.job is not None:
            try:
                job = _held_job(config, spec, upstream, inputs.version)
                work = job.build(writer, range(job.batches))
                info = job.finish(writer, total([*shard_stats, work]))
            finally:
                _held.job = None
        else:
            assert spec.build is not None
            info = spec.build(Build(config, store, upstream, writer))
        ref = writer.commit(info)
    return StageOutcome(ref, skipped=False, seconds=round(time.perf_counter() - started, 3))


SUPERSEDED = ".superseded-"  # a version replaced by a rebuild: `.superseded-<version>-<when>`


def supersede_for_rebuild(config: NeggenConfig, stages: Sequence[str]) -> list[str]:
    """Move the artifacts these stages have under this config aside (each under its lock), so
    that the run builds them again; the old ones are kept, as superseded, until `neggen gc`.
    Returns the folders they now live in."""
    store = open_store(config)
    versions = plan_versions(config)
    moved = []
    for stage in stages:
        if stage not in versions:
            raise ConfigError(f"rebuild {stage!r}: no such stage (stages: {STAGE_ORDER})")
    for stage in stages:
        version = versions[stage]
        with store.lock(stage, version, f"rebuild {stage}", config.artifacts.lock_timeout_s):
            folder = store.path(stage, version)
            if store.fs.exists(folder):
                when = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
                aside = store.path(stage, f"{SUPERSEDED}{version}-{when}")
                store.fs.mv(folder, aside, recursive=True)
                _verified.discard((store.root, store.dataset, stage, version))
                moved.append(uri_of(store.fs, aside))
    return moved


def superseded(store: ArtifactStore, stage: str) -> list[tuple[str, str]]:
    """The versions of `stage` replaced by a rebuild and not yet collected, as (version,
    folder name), oldest first."""
    stage_dir = posixpath.dirname(store.path(stage, "x"))
    if not store.fs.exists(stage_dir):
        return []
    found = []
    for entry in sorted(store.fs.ls(stage_dir, detail=False)):
        name = posixpath.basename(entry.rstrip("/"))
        if name.startswith(SUPERSEDED) and store.exists(stage, name):
            found.append((name[len(SUPERSEDED) :].rsplit("-", 1)[0], name))
    return found


_verified: set[tuple[str, str, str, str]] = set()


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
    if built(store, spec.name, inputs.version) is not None:
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
