"""Running a neggen_core stage inside a Prefect task: skip-if-built, Prefect's cache keyed by the
artifact version, a table artifact of what the stage holds, progress for the long stages."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import CachePolicy
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext
from prefect.exceptions import ObjectNotFound

from neggen_core import progress
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from neggen_core.errors import ArtifactError
from neggen_core.llm.backend import uses_vllm
from neggen_core.pipeline.run import built_artifact, run_stage
from neggen_core.pipeline.spec import StageSpec
from neggen_core.pipeline.stages import open_store, spec_of
from neggen_core.sharding import Stats

PROGRESS_STAGES = ("attributes", "negatives", "embeddings")
LLM_STAGES = ("attributes", "negatives")


@dataclass
class ArtifactVersion(CachePolicy):
    """Prefect's cache key for a stage task: its artifact's version and place, and only while
    that artifact exists intact, so Prefect's cache and the artifact store always agree (a
    deleted or damaged artifact goes to the stage, never served from Prefect's cache). Inputs
    are the config and upstream `ArtifactRef`s, never data."""

    stage: str | StageSpec = ""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        config: NeggenConfig = inputs["config"]
        spec = spec_of(self.stage)
        upstream = inputs.get("upstream") or {name: inputs[name] for name in spec.upstream}
        try:
            ref = built_artifact(config, spec, upstream)
        except ArtifactError:  # damaged: the stage task says so and names the fix
            return None
        if ref is None:
            return None
        place = hashlib.sha256(ref.uri.encode()).hexdigest()[:16]
        return f"neggen-{spec.name}-{ref.version}-{place}"


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from free text."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def progress_listener(stage: str, unit: str) -> progress.Listener:
    """A listener that keeps one Prefect progress artifact of `stage` up to date."""
    artifact: list[UUID] = []

    def update(_: str, done: int, total: int) -> None:
        value = 100.0 * done / max(total, 1)
        description = f"{stage}: {unit} done ({done} of {total})"
        if not artifact:
            created = create_progress_artifact(value, key=None, description=description)
            artifact.append(created if isinstance(created, UUID) else UUID(str(created)))
        else:
            update_progress_artifact(artifact[0], value, description=description)

    return update


def llm_limit(config: NeggenConfig, stage: str) -> str | None:
    """The global concurrency limit `stage` holds a slot of while it talks to the LLM server: for
    an LLM stage on the vLLM backend, `orchestration.llm_concurrency_limit` when the Prefect API
    has it. None otherwise, with a warning when it is missing (asking for a slot of a missing
    limit would cost each shard a round trip to the API for nothing)."""
    if stage not in LLM_STAGES or not uses_vllm(config):
        return None
    name = config.orchestration.llm_concurrency_limit
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            get_run_logger().warning(
                "%s: no global concurrency limit %r, so its requests are not capped across "
                "shards and flow runs (`prefect gcl create %s --limit N` sets one)",
                stage,
                name,
                name,
            )
            return None
    return name


def llm_slot(limit: str | None) -> AbstractContextManager[object]:
    """One slot of `limit` (a global concurrency limit) while held; nothing when None."""
    return concurrency(limit) if limit else nullcontext()


def run_logged(
    config: NeggenConfig,
    stage: str | StageSpec,
    upstream: Mapping[str, ArtifactRef],
    shard_stats: Sequence[Stats] = (),
    limit: str | None = None,
) -> ArtifactRef:
    """Run (or skip, or finish after its shards) one stage, holding a slot of the global
    concurrency limit `limit` (when there is one), say which in the run log, and leave a table
    artifact of its tables (rows and Parquet paths)."""
    logger = get_run_logger()
    name = spec_of(stage).name
    with ExitStack() as stack:
        if name in PROGRESS_STAGES:
            stack.enter_context(progress.listening(progress_listener(name, "batches")))
        stack.enter_context(llm_slot(limit))
        outcome = run_stage(config, stage, upstream, shard_stats=shard_stats)
    manifest = open_store(config).manifest(name, outcome.ref.version)
    if outcome.skipped:
        logger.info(
            "%s: version %s already built at %s; skipped (nothing rewritten)",
            name,
            outcome.ref.version,
            outcome.ref.uri,
        )
    else:
        rows = ", ".join(f"{table} {entry.rows:,}" for table, entry in manifest.tables.items())
        sharded = f" (after {len(shard_stats)} shards)" if shard_stats else ""
        logger.info(
            "%s: built version %s in %.1f s%s at %s (%s)",
            name,
            outcome.ref.version,
            outcome.seconds,
            sharded,
            outcome.ref.uri,
            rows,
        )
    create_table_artifact(
        table=[
            {"table": table, "rows": entry.rows, "path": f"{outcome.ref.uri}/{table}"}
            for table, entry in manifest.tables.items()
        ],
        key=artifact_key(config.dataset.name, name),
        description=f"{name} {outcome.ref.version} ({'skipped' if outcome.skipped else 'built'})",
    )
    return outcome.ref
