"""Sharded stages benchmark: one task against shards on a task runner, side by side in one run.

1. LLM stage: attributes on the vLLM backend against the stand-in server (its own process,
   `--latency` seconds per answer, as a server with data-parallel replicas would answer), on the
   Office items (the demo's when ../shared is absent): `run_stage` in one piece, then the `neggen`
   flow mapping 64-item batches over 1, 4 and 8 threads, and over 8 threads under a global
   concurrency limit of 4 slots. Items/s and the ratio to one piece; every run builds the same
   version from an empty response cache.
2. CPU stage: embeddings of the small demo (2 cores here) in one piece, on 2 threads and on a
   local Dask cluster of 2 processes (when prefect-dask is installed).

    python bench/shards.py [--latency 0.1] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from _standin import MODEL, standin_process

from neggen_core.config import NeggenConfig, load_config
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

OFFICE = REPO / "configs" / "office.yaml"
LIMIT = "bench-llm"  # a global concurrency limit of 4 slots
DEMO = ("llm.zero_shot=false", "negatives.per_item=4", "embeddings.batch_size=128")


def _config(root: Path, overrides: list[str]) -> tuple[str | None, NeggenConfig]:
    path = str(OFFICE) if (REPO.parent / "shared" / "data" / "amazon-office").is_dir() else None
    return path, load_config(path, [f"artifacts.root={root}", *overrides])


def _prebuilt(base: Path, root: Path, config: NeggenConfig, stages: tuple[str, ...]) -> None:
    """Copy the stages built under `base` into `root` (an untimed start)."""
    for stage in stages:
        source = base / config.dataset.name / stage
        shutil.copytree(source, root / config.dataset.name / stage)


def _timed_flow(config_path: str | None, overrides: list[str], stage: str) -> float:
    from flows.neggen import neggen

    started = time.perf_counter()
    neggen(config_path=config_path, overrides=overrides, from_stage=stage, until_stage=stage)
    return time.perf_counter() - started


def _create_limit(name: str, slots: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=slots))


def bench_llm(tmp: Path, latency: float, concurrency: int) -> dict[str, Any]:
    with standin_process(latency) as base_url:
        llm = [
            "llm.backend=vllm",
            f"llm.vllm.base_url={base_url}",
            f"llm.vllm.model={MODEL}",
            f"llm.vllm.concurrency={concurrency}",
            "attributes.batch_size=64",
        ]
        base = tmp / "llm-base"
        path, config = _config(base, llm)
        run_stage(config, "ingest", {})
        items = open_store(config).manifest("ingest", open_store(config).versions("ingest")[0])
        count = items.tables["items"].rows
        runs: dict[str, Any] = {}
        versions = set()
        _create_limit(LIMIT, 4)
        for label, workers, limit in (
            ("one_piece", 0, None),
            ("threads_1", 1, None),
            ("threads_4", 4, None),
            ("threads_8", 8, None),
            ("threads_8_limit_4", 8, LIMIT),
        ):
            root = tmp / f"llm-{label}"
            settings = [
                *llm,
                f"orchestration.task_runner.max_workers={max(workers, 1)}",
                f"orchestration.llm_concurrency_limit={limit or 'bench-none'}",
            ]
            path, config = _config(root, settings)
            _prebuilt(base, root, config, ("ingest",))
            if workers == 0:
                upstream = {"ingest": open_store(config).ref("ingest", items.version)}
                started = time.perf_counter()
                outcome = run_stage(config, "attributes", upstream)
                seconds = time.perf_counter() - started
                versions.add(outcome.ref.version)
            else:
                seconds = _timed_flow(path, [f"artifacts.root={root}", *settings], "attributes")
                versions.update(open_store(config).versions("attributes"))
            runs[label] = {
                "seconds": round(seconds, 2),
                "items_per_second": round(count / seconds, 1),
            }
    one = runs["one_piece"]["seconds"]
    for figures in runs.values():
        figures["speedup_vs_one_piece"] = round(one / figures["seconds"], 2)
    return {
        "dataset": config.dataset.name,
        "items": count,
        "batches": -(-count // 64),
        "latency_s": latency,
        "concurrency_per_shard": concurrency,
        "one_version": len(versions) == 1,
        "runs": runs,
    }


def bench_cpu(tmp: Path) -> dict[str, Any]:
    base = tmp / "cpu-base"
    config = load_config(None, [f"artifacts.root={base}", *DEMO])
    refs = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("negatives") + 1]:
        refs[stage] = run_stage(config, stage, refs).ref
    runners = [("one_piece", []), ("threads_2", ["orchestration.task_runner.max_workers=2"])]
    if importlib.util.find_spec("prefect_dask") is not None:
        runners.append(
            (
                "dask_2",
                ["orchestration.task_runner.kind=dask", "orchestration.task_runner.max_workers=2"],
            )
        )
    runs: dict[str, Any] = {}
    versions = set()
    for label, settings in runners:
        root = tmp / f"cpu-{label}"
        overrides = [f"artifacts.root={root}", *DEMO, "orchestration.shards=8", *settings]
        config = load_config(None, overrides)
        _prebuilt(base, root, config, ("ingest", "attributes", "negatives"))
        if label == "one_piece":
            started = time.perf_counter()
            run_stage(
                config,
                "embeddings",
                {s: open_store(config).ref(s, r.version) for s, r in refs.items()},
            )
            seconds = time.perf_counter() - started
        else:
            seconds = _timed_flow(None, overrides, "embeddings")
        store = open_store(config)
        version = store.versions("embeddings")[0]
        versions.add(version)
        texts = store.read_json(store.ref("embeddings", version), "report.json")["unique_texts"]
        runs[label] = {"seconds": round(seconds, 2), "texts_per_second": round(texts / seconds, 1)}
    one = runs["one_piece"]["seconds"]
    for figures in runs.values():
        figures["speedup_vs_one_piece"] = round(one / figures["seconds"], 2)
    return {
        "texts": texts,
        "cores": os.cpu_count(),
        "one_version": len(versions) == 1,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", default=str(HERE / "results" / "shards.json"))
    args = parser.parse_args()
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
        from prefect.testing.utilities import prefect_test_harness

        with prefect_test_harness(server_startup_timeout=120):
            report = {
                "llm_stage": bench_llm(tmp, args.latency, args.concurrency),
                "cpu_stage": bench_cpu(tmp),
            }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
