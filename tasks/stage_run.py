"""Running a neggen_core stage inside a Prefect task: skip-if-built, Prefect's cache keyed by the
artifact version, a table artifact of what the stage holds, progress for the long stages."""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, NoReturn
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
from prefect.exceptions import MissingContextError, ObjectNotFound
from tqdm import tqdm

from neggen_core import progress
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from neggen_core.errors import ArtifactError
from neggen_core.llm.backend import uses_vllm
from neggen_core.pipeline.run import built_artifact, run_stage
from neggen_core.pipeline.spec import StageSpec
from neggen_core.pipeline.stages import open_store, spec_of
from neggen_core.sharding import Stats

# the stages that report progress, and in what
PROGRESS_UNITS = {
    "attributes": "batches",
    "negatives": "batches",
    "embeddings": "batches",
    "train": "epochs",
}
LLM_STAGES = ("attributes", "negatives")


@dataclass(frozen=True)
class ShardRun:
    """What a sharded stage's shards did before its own task finishes it: each shard's counters
    and the wall time they took together."""

    stats: Sequence[Stats] = ()
    seconds: float = 0.0


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


class StageProgress:
    """Progress of one stage (`stage.report` calls): a Prefect progress artifact, and a tqdm bar
    when stderr is a terminal (none in CI logs or a worker's)."""

    def __init__(self, stage: str, unit: str) -> None:
        self.stage, self.unit = stage, unit
        self._artifact: UUID | None = None
        self._bar: tqdm[NoReturn] | None = None

    def __call__(self, _: str, done: int, total: int, detail: str = "") -> None:
        value = 100.0 * done / max(total, 1)
        description = f"{self.stage}: {done} of {total} {self.unit}" + (
            f"; {detail}" if detail else ""
        )
        if self._artifact is None:
            created = create_progress_artifact(value, key=None, description=description)
            self._artifact = created if isinstance(created, UUID) else UUID(str(created))
        else:
            update_progress_artifact(self._artifact, value, description=description)
        if self._bar is None and sys.stderr.isatty():
            self._bar = tqdm(total=total, desc=self.stage, unit=self.unit, file=sys.stderr)
        if self._bar is not None:
            self._bar.total = total
            self._bar.update(done - self._bar.n)
            if detail:
                self._bar.set_postfix_str(detail, refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _ToRunLog(logging.Handler):
    """neggen_core's log records, in the run log of the Prefect task or flow that emitted them
    (`fallback`'s for a thread without a run context, e.g. an encoder's worker thread)."""

    def __init__(self, fallback: logging.LoggerAdapter[logging.Logger]) -> None:
        super().__init__()
        self.fallback = fallback

    def emit(self, record: logging.LogRecord) -> None:
        try:
            try:
                logger = get_run_logger()
            except MissingContextError:
                logger = self.fallback
            logger.log(record.levelno, "%s", record.getMessage())
        except Exception:
            self.handleError(record)


class _CoreLogs:
    """The forwarding of neggen_core's records into run logs, shared by the stages running at
    once in this process: installed by the first, removed (the logger as it was) by the last."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("neggen_core")
        self.lock = threading.Lock()
        self.users = 0
        self.handler: _ToRunLog | None = None
        self.saved = (logging.NOTSET, True)

    @contextmanager
    def forwarded(self) -> Iterator[None]:
        with self.lock:
            if self.users == 0:
                self.saved = (self.logger.level, self.logger.propagate)
                self.handler = _ToRunLog(get_run_logger())  # type: ignore[arg-type]
                self.logger.addHandler(self.handler)
                self.logger.setLevel(min(self.logger.getEffectiveLevel(), logging.INFO))
                self.logger.propagate = False
            self.users += 1
        try:
            yield
        finally:
            with self.lock:
                self.users -= 1
                if self.users == 0 and self.handler is not None:
                    self.logger.removeHandler(self.handler)
                    self.logger.level, self.logger.propagate = self.saved
                    self.handler = None


_core_logs = _CoreLogs()


def core_logs_in_run_log() -> AbstractContextManager[None]:
    """While a stage runs, neggen_core's INFO and above go to the Prefect run log (and so to the
    console and the API), not around it to the root logger (which would print them twice)."""
    return _core_logs.forwarded()


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
    shards: ShardRun | None = None,
    limit: str | None = None,
) -> ArtifactRef:
    """Run (or skip, or finish after its `shards`) one stage, holding a slot of the global
    concurrency limit `limit` (when there is one), with its progress shown and its log in the
    run log; say what happened, and leave a table artifact of its tables (rows, Parquet paths)."""
    logger = get_run_logger()
    name = spec_of(stage).name
    shards = shards or ShardRun()
    with ExitStack() as stack:
        stack.enter_context(core_logs_in_run_log())
        if name in PROGRESS_UNITS:
            shown = StageProgress(name, PROGRESS_UNITS[name])
            stack.callback(shown.close)
            stack.enter_context(progress.listening(shown))
        stack.enter_context(llm_slot(limit))
        outcome = run_stage(config, stage, upstream, shard_stats=shards.stats)
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
        count = len(shards.stats)
        sharded = (
            f" ({shards.seconds:.1f} s in {count} shard{'s' * (count != 1)},"
            f" then {outcome.seconds:.1f} s)"
            if count
            else ""
        )
        logger.info(
            "%s: built version %s in %.1f s%s at %s (%s)",
            name,
            outcome.ref.version,
            shards.seconds + outcome.seconds,
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
