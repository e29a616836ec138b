"""Shards of a stage: how batches are cut, shards built in any order give the artifact one
piece gives, and the task runner named by config."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import load_config
from neggen_core.errors import ConfigError
from neggen_core.pipeline.run import build_shard, pending_shards, run_stage
from neggen_core.pipeline.stages import open_store
from neggen_core.sharding import shard_ranges, total
from tests.support.helpers import DEMO_SETTINGS


@pytest.mark.parametrize(("batches", "shards"), [(10, 3), (5, 8), (256, 256), (1000, 7), (0, 4)])
def test_shards_cover_every_batch_once_in_order(batches: int, shards: int) -> None:
    ranges = shard_ranges(batches, shards)
    assert [n for r in ranges for n in r] == list(range(batches))
    assert len(ranges) == min(batches, shards)
    if ranges:
        assert max(map(len, ranges)) - min(map(len, ranges)) <= 1


def test_counters_of_shards_are_summed() -> None:
    assert total([{"requests": 3, "seconds": 1.5}, {}, {"requests": 2}]) == {
        "requests": 5,
        "seconds": 1.5,
    }


def test_shards_in_any_order_then_the_stage_give_the_one_piece_artifact(
    tmp_path: Path, demo_built: tuple[str, dict[str, ArtifactRef]]
) -> None:
    built_root, refs = demo_built
    for root in ("sharded", "whole"):
        for stage in ("ingest", "attributes"):
            shutil.copytree(
                Path(built_root, "demo-small", stage), tmp_path / root / "demo-small" / stage
            )
    settings = [*DEMO_SETTINGS, "negatives.round=7"]  # a version the session has not built
    config = load_config(None, [f"artifacts.root={tmp_path / 'sharded'}", *settings])
    store = open_store(config)
    upstream = {stage: store.ref(stage, refs[stage].version) for stage in ("ingest", "attributes")}

    shards = pending_shards(config, "negatives", upstream, 3)
    assert [(r.start, r.stop) for r in shards] == [(0, 2), (2, 4), (4, 5)]
    assert build_shard(config, "negatives", upstream, shards[2])["seconds"] > 0
    assert build_shard(config, "negatives", upstream, shards[0])["seconds"] > 0
    assert pending_shards(config, "negatives", upstream, 3) == [shards[1]]
    assert build_shard(config, "negatives", upstream, shards[0]) == {}  # written: nothing to do
    sharded = run_stage(config, "negatives", upstream)  # builds the middle shard and finishes
    assert pending_shards(config, "negatives", upstream, 3) == []

    whole_config = load_config(None, [f"artifacts.root={tmp_path / 'whole'}", *settings])
    whole_store = open_store(whole_config)
    whole_upstream = {name: whole_store.ref(name, ref.version) for name, ref in upstream.items()}
    whole = run_stage(whole_config, "negatives", whole_upstream)
    assert not whole.skipped and whole.ref.version == sharded.ref.version
    mine = store.manifest("negatives", sharded.ref.version).tables["negatives"].files
    theirs = whole_store.manifest("negatives", whole.ref.version)
    assert [f.sha256 for f in mine] == [f.sha256 for f in theirs.tables["negatives"].files]
    assert len(mine) == 5


def test_the_task_runner_is_the_one_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

    from tasks.runners import task_runner

    for kind, runner_type in (("thread", ThreadPoolTaskRunner), ("process", ProcessPoolTaskRunner)):
        config = load_config(
            None,
            [f"orchestration.task_runner.kind={kind}", "orchestration.task_runner.max_workers=3"],
        )
        runner = task_runner(config.orchestration.task_runner)
        assert isinstance(runner, runner_type) and runner._max_workers == 3

    for kind in ("dask", "ray"):
        monkeypatch.setitem(sys.modules, f"prefect_{kind}", None)  # not installed
        config = load_config(None, [f"orchestration.task_runner.kind={kind}"])
        with pytest.raises(
            ConfigError, match=rf"needs prefect-{kind}: pip install 'neggen\[{kind}\]'"
        ):
            task_runner(config.orchestration.task_runner)

    for kind in ("thread", "process"):
        with pytest.raises(ConfigError, match="address needs kind dask or ray"):
            load_config(
                None,
                [
                    f"orchestration.task_runner.kind={kind}",
                    "orchestration.task_runner.address=tcp://scheduler:8786",
                ],
            )
