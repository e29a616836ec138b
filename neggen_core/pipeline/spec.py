"""What a stage is, typed: each stage's `job.py` declares its `SPEC`, so the table of stages
(`neggen_core.pipeline.stages`) names the code that builds each one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.config import NeggenConfig
from neggen_core.sharding import JobFactory


@dataclass(frozen=True)
class Build:
    """What a stage's build function is given: the config, the store, the upstream artifacts
    its version was computed from, and the writer of its new artifact."""

    config: NeggenConfig
    store: ArtifactStore
    upstream: Mapping[str, ArtifactRef]
    writer: ArtifactWriter


BuildFn = Callable[[Build], dict[str, Any]]  # returns the manifest's info


@dataclass(frozen=True)
class StageSpec:
    """One stage: its upstream stages, tables, version inputs, and either a build function
    (`build`) or, for a stage built in shards, a job factory (`job`). `resumable`: part files
    survive a crash (a sharded stage always is). `reads`: the upstream stages a config's build
    actually reads, when that is fewer than `upstream`."""

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

    @property
    def sharded(self) -> bool:
        return self.job is not None

    @property
    def keeps_parts(self) -> bool:
        """Whether a crashed build's part files are kept for the rerun."""
        return self.resumable or self.sharded

    def inputs(self, config: NeggenConfig) -> tuple[str, ...]:
        """The upstream stages this config's build reads, which alone make its version: a
        baseline's train reads no embeddings, so a new negatives round leaves it as it is."""
        return self.upstream if self.reads is None else self.reads(config)
