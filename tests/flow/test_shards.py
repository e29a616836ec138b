"""The LLM and embedding stages mapped over shards in the flow: the same artifact as one task
builds, on threads or on a Dask cluster; a failed shard resumed; LLM shards under the global
concurrency limit."""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.states import State

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import load_config
from neggen_core.negatives.job import NegativesJob
from neggen_core.pipeline.stages import open_store
from tests.support.helpers import DEMO_SETTINGS
from tests.support.standin_server import Settings, StandIn

SHARDED = ("attributes", "negatives", "embeddings")
SETTINGS = (*DEMO_SETTINGS, "orchestration.shards=3")  # 10, 5 and 7 batches: 3 shards each
pytestmark = pytest.mark.usefixtures("prefect_harness")


def _overrides(root: Path | str, *more: str) -> list[str]:
    return [f"artifacts.root={root}", *SETTINGS, *more]


@pytest.fixture(scope="module")
def whole(demo_built: tuple[str, dict[str, ArtifactRef]]) -> dict[str, ArtifactRef]:
    """The data stages built without Prefect, each in one piece."""
    return demo_built[1]


def _run(root: Path, until: str, *more: str) -> State[Any]:
    from flows.neggen import neggen

    state = neggen(overrides=_overrides(root, *more), until_stage=until, return_state=True)
    assert isinstance(state, State)
    return state


def _assert_same(root: Path, whole: dict[str, ArtifactRef], stages: tuple[str, ...]) -> None:
    """Each stage's artifact under `root` has the version, part files and rows of the one built
    in one piece."""
    store = open_store(load_config(None, _overrides(root)))
    reference = open_store(load_config(None, _overrides(Path(whole["ingest"].root))))
    for stage in stages:
        ref = whole[stage]
        assert store.exists(stage, ref.version), stage
        mine, theirs = store.manifest(stage, ref.version), reference.manifest(stage, ref.version)
        assert mine.info == theirs.info, stage
        for table, entry in theirs.tables.items():
            assert [f.path for f in mine.tables[table].files] == [f.path for f in entry.files]
            for mine_file, their_file in zip(mine.tables[table].files, entry.files, strict=True):
                assert mine_file.sha256 == their_file.sha256, (stage, table, mine_file.path)


def _task_runs_and_progress(flow_run_id: uuid.UUID) -> tuple[list[str], list[Any]]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
        )
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return [run.name for run in runs], [a for a in artifacts if a.type == "progress"]


def test_shards_on_threads_build_what_one_task_builds(
    tmp_path: Path, whole: dict[str, ArtifactRef]
) -> None:
    root = tmp_path / "artifacts"
    threads = ("orchestration.task_runner.kind=thread", "orchestration.task_runner.max_workers=2")
    state = _run(root, "embeddings", *threads)
    assert state.is_completed(), state
    _assert_same(root, whole, SHARDED)

    names, progress = _task_runs_and_progress(state.state_details.flow_run_id)
    for stage in SHARDED:
        shards = sorted(n for n in names if n.startswith(f"{stage}-shard-"))
        assert len(shards) == 3, names
        assert f"{stage}-shards" in names
    finished = {str(a.description): float(a.data) for a in progress}
    for stage in SHARDED:
        assert finished.get(f"{stage}: 3 of 3 shards") == 100.0, finished

    store = open_store(load_config(None, _overrides(root)))
    version = whole["embeddings"].version
    report = store.read_json(store.ref("embeddings", version), "report.json")
    assert report["texts_encoded_this_attempt"] == report["unique_texts"]

    # built: a second run maps no shard
    again = _run(root, "embeddings", *threads)
    names, _ = _task_runs_and_progress(again.state_details.flow_run_id)
    assert not [n for n in names if "-shard-" in n], names


def test_a_failed_shard_is_resumed_and_nothing_is_built_twice(
    tmp_path: Path, whole: dict[str, ArtifactRef], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "artifacts"
    in_process = "orchestration.task_runner.kind=thread"  # the patch reaches thread workers
    assert _run(root, "attributes", in_process).is_completed()
    real_batch = NegativesJob._batch

    def failing_at_batch_two(self: NegativesJob, number: int) -> object:
        if number == 2:
            raise RuntimeError("a worker died in batch 2")
        return real_batch(self, number)

    monkeypatch.setattr(NegativesJob, "_batch", failing_at_batch_two)
    failed = _run(root, "negatives", in_process)
    assert failed.is_failed()
    version = whole["negatives"].version
    staging = root / "demo-small" / "negatives" / f".staging-{version}" / "negatives"
    written = {p.name: p.stat().st_mtime_ns for p in staging.glob("part-*.parquet")}
    assert "part-00002.parquet" not in written and written

    monkeypatch.setattr(NegativesJob, "_batch", real_batch)
    resumed = _run(root, "negatives", in_process)
    assert resumed.is_completed()
    names, _ = _task_runs_and_progress(resumed.state_details.flow_run_id)
    assert "negatives-shard-2-4" in names and "negatives-shard-0-2" not in names
    _assert_same(root, whole, ("attributes", "negatives"))
    published = root / "demo-small" / "negatives" / version / "negatives"
    assert {name: (published / name).stat().st_mtime_ns for name in written} == written


def test_llm_shards_hold_the_global_concurrency_limit(tmp_path: Path) -> None:
    """Three shards on three threads, each sending up to 2 requests at once: with a global limit
    of 1 slot the server never has more than 2 requests in flight; with 3 slots it has more."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    peaks = {}
    for slots in (1, 3):
        name = f"neggen-llm-test-{slots}"
        with get_client(sync_client=True) as client:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots)
            )
        with StandIn(Settings(latency_s=0.02)) as server:
            state = _run(
                tmp_path / f"slots-{slots}",
                "attributes",
                *server.overrides(),
                "llm.vllm.timeout_s=30",  # no retry on a loaded machine: each item asked once
                "llm.vllm.concurrency=2",
                f"orchestration.llm_concurrency_limit={name}",
                "orchestration.task_runner.max_workers=3",
            )
            assert state.is_completed(), state
            tally = server.tally.snapshot()
        assert tally["answered"] == 295 and tally["rejected"] == 0
        peaks[slots] = tally["peak_in_flight"]
    assert peaks[1] <= 2 < peaks[3], peaks


def _installed(kind: str) -> bool:
    return importlib.util.find_spec(f"prefect_{kind}") is not None


@pytest.mark.parametrize(
    "kind",
    [
        "process",
        pytest.param(
            "dask", marks=pytest.mark.skipif(not _installed("dask"), reason="the dask extra")
        ),
        # Ray is not in the dev extra (a 70 MB wheel and a cluster start): pip install '.[ray]'
        # and run with -m slow
        pytest.param(
            "ray",
            marks=[
                pytest.mark.slow,
                pytest.mark.skipif(not _installed("ray"), reason="the ray extra"),
            ],
        ),
    ],
)
def test_shards_on_processes_or_a_local_cluster_build_what_one_task_builds(
    kind: str, tmp_path: Path, whole: dict[str, ArtifactRef]
) -> None:
    root = tmp_path / "artifacts"
    state = _run(
        root,
        "negatives",
        f"orchestration.task_runner.kind={kind}",
        "orchestration.task_runner.max_workers=2",
    )
    assert state.is_completed(), state
    _assert_same(root, whole, ("attributes", "negatives"))
    names, _ = _task_runs_and_progress(state.state_details.flow_run_id)
    assert len([n for n in names if n.startswith("negatives-shard-")]) == 3, names
