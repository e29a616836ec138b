"""The sharded stages in the flow: a stage's pending shards mapped over the configured task
runner (`tasks.runners`), each shard one task that holds a slot of the
LLM server's global concurrency limit in an LLM stage; the stage's own task then finishes the
artifact from what the shards wrote."""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextlib import ExitStack
from types import TracebackType
from typing import Any

from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig
from neggen_core.pipeline.run import build_shard, pending_shards
from neggen_core.sharding import Stats
from neggen_core.threads import use_threads, worker_threads
from tasks.runners import task_runner
from tasks.stage_run import ShardRun, StageProgress, llm_slot


@task(name="shards", task_run_name="{stage}-shards", cache_policy=NO_CACHE)
def plan(
    config: NeggenConfig, stage: str, upstream: Mapping[str, ArtifactRef]
) -> list[tuple[int, int]]:
    """The shards of `stage` with a batch still to build, as (first, stop) batch numbers."""
    return [
        (r.start, r.stop)
        for r in pending_shards(config, stage, upstream, config.orchestration.shards)
    ]


@task(name="shard", task_run_name="{stage}-shard-{first}-{stop}", cache_policy=NO_CACHE)
def shard(
    config: NeggenConfig,
    stage: str,
    upstream: Mapping[str, ArtifactRef],
    first: int,
    stop: int,
    limit: str | None = None,
    threads: int | None = None,
) -> Stats:
    """Build batches first..stop-1 of `stage` (those not written yet) into its staging folder,
    holding a slot of the global concurrency limit `limit` (when there is one), with `threads`
    threads for the numeric libraries (None: their defaults, for shards that share a process)."""
    if threads is not None:
        use_threads(threads)
    with llm_slot(limit):
        return build_shard(config, stage, upstream, range(first, stop))


class ShardMap:
    """Maps sharded stages over the configured task runner, started at its first use and stopped
    when the flow leaves this context."""

    def __init__(self, config: NeggenConfig) -> None:
        self.settings = config.orchestration.task_runner
        self._stack = ExitStack()
        self._runner: TaskRunner[Any] | None = None

    def __enter__(self) -> ShardMap:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.close()

    def _started(self) -> TaskRunner[Any]:
        if self._runner is None:
            self._runner = self._stack.enter_context(task_runner(self.settings))
        return self._runner

    def build(
        self,
        config: NeggenConfig,
        stage: str,
        upstream: Mapping[str, ArtifactRef],
        limit: str | None = None,
    ) -> ShardRun:
        """Build the pending shards of `stage`, each holding a slot of `limit` (when there is
        one): the counters each returned (none when the stage is built or has nothing left) and
        their wall time."""
        started = time.perf_counter()
        shards = plan(config, stage, upstream)
        if not shards:
            return ShardRun()
        futures = self._started().map(
            shard,
            {
                "config": unmapped(config),
                "stage": unmapped(stage),
                "upstream": unmapped(dict(upstream)),
                "first": [first for first, _ in shards],
                "stop": [stop for _, stop in shards],
                "limit": unmapped(limit),
                "threads": unmapped(
                    None if self.settings.kind == "thread" else worker_threads(self.settings)
                ),
            },
        )
        shown = StageProgress(stage, "shards")
        stats = []
        try:
            for done, future in enumerate(as_completed(futures), 1):
                stats.append(future.result())
                shown(stage, done, len(shards))
        finally:
            shown.close()
        return ShardRun(stats, round(time.perf_counter() - started, 3))
