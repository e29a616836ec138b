"""Stages built in shards: runs of batches that separate workers (threads, Dask or Ray) build
into one staging folder, then one finish that assembles the artifact.

A sharded stage is a `ShardedJob`. It knows how many batches it has, builds any of them (those
whose part files exist are skipped) and finishes the artifact once they are all written. A batch,
not a shard, is a part file and a resume step, so the artifact is the same however many shards
built it, on whatever runner, in whatever order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.config import NeggenConfig

Stats = dict[str, float]


class ShardedJob(Protocol):
    """One sharded stage's build over a fixed list of batches."""

    batches: int
    marker: str  # the table whose part, written last, marks a batch done

    def build(self, writer: ArtifactWriter, numbers: Sequence[int]) -> Stats:
        """Write the batches `numbers` not written yet; counters of the work done."""
        ...

    def finish(self, writer: ArtifactWriter, stats: Stats) -> dict[str, Any]:
        """Assemble the artifact from every batch (all written); `stats` are the summed counters
        of this attempt's `build` calls. Returns the manifest's info."""
        ...


JobFactory = Callable[[NeggenConfig, ArtifactStore, Mapping[str, ArtifactRef]], ShardedJob]


def shard_ranges(batches: int, shards: int) -> list[range]:
    """Batches 0..batches-1 cut into at most `shards` contiguous runs, longest first by at most
    one batch."""
    count = max(1, min(shards, batches))
    size, extra = divmod(batches, count)
    ranges, start = [], 0
    for shard in range(count):
        stop = start + size + (1 if shard < extra else 0)
        ranges.append(range(start, stop))
        start = stop
    return [r for r in ranges if len(r)]


def pending(job: ShardedJob, writer: ArtifactWriter, shards: int) -> list[range]:
    """The shards with a batch still to write."""
    done = set(writer.parts(job.marker))
    return [r for r in shard_ranges(job.batches, shards) if not done.issuperset(r)]


def still_to_do(writer: ArtifactWriter, marker: str, numbers: Sequence[int]) -> list[int]:
    """The batches of `numbers` whose marker part is not written yet."""
    done = set(writer.parts(marker))
    return [number for number in numbers if number not in done]


def counted(before: Mapping[str, Any], after: Mapping[str, Any]) -> Stats:
    """What numeric counters grew by between two snapshots."""
    return {
        key: after[key] - before.get(key, 0)
        for key, value in after.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def total(stats: Iterable[Mapping[str, float]]) -> Stats:
    """Counters of several builds, summed key by key."""
    summed: Stats = {}
    for entry in stats:
        for key, value in entry.items():
            summed[key] = summed.get(key, 0) + value
    return summed
