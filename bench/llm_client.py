"""LLM client benchmark.

1. The vLLM backend against the stand-in server (its own process) answering each request after
   `--latency` seconds: `--requests` distinct requests at `--concurrency`; throughput beside the
   ideal concurrency / latency. Every reply is written to a fresh response cache, as in a run.
2. The lexicon backend's items/s on the real Office data (when ../shared is there), with the
   sentence encoder's load time apart.

    python bench/llm_client.py [--requests 2000] [--concurrency 32] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _standin import MODEL, standin_process

from neggen_core.artifacts.schemas import ITEMS
from neggen_core.attributes.contract import item_inputs
from neggen_core.config import VllmConfig, load_config
from neggen_core.images import ImagePolicy
from neggen_core.llm.cache import ResponseCache
from neggen_core.llm.models import ItemInput
from neggen_core.llm.vllm import VllmBackend

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def bench_vllm(requests: int, concurrency: int, latency: float) -> dict[str, Any]:
    with standin_process(latency) as base_url, tempfile.TemporaryDirectory() as cache_dir:
        import fsspec

        cache = ResponseCache(fsspec.filesystem("file"), cache_dir)
        config = VllmConfig(base_url=base_url, model=MODEL, concurrency=concurrency)
        backend = VllmBackend(config, cache, ImagePolicy(root=None))
        backend.check_health()
        items = [
            ItemInput(
                item_idx=i,
                title=f"Item {i} in blue, {i % 7 + 1} pack",
                description="A benchmark item.",
                brand=None,
                categories=("Bench",),
                image_uri=None,
            )
            for i in range(requests)
        ]
        started = time.perf_counter()
        results = backend.extract(items)
        seconds = time.perf_counter() - started
    ideal = concurrency / latency
    throughput = requests / seconds
    return {
        "requests": requests,
        "concurrency": concurrency,
        "latency_s": latency,
        "seconds": round(seconds, 3),
        "requests_per_second": round(throughput, 1),
        "ideal_requests_per_second": round(ideal, 1),
        "share_of_ideal": round(throughput / ideal, 3),
        "ok": sum(r.status == "ok" for r in results),
        "target_share_of_ideal": 0.8,
        "meets_target": throughput / ideal >= 0.8,
    }


def bench_offline() -> dict[str, Any] | None:
    office = REPO.parent / "shared" / "data" / "amazon-office"
    if not (office / "Office.inter.json").exists():
        return None
    from neggen_core.encoders.text import bundled_encoder
    from neggen_core.llm.lexicon_backend import LexiconBackend, ZeroShot
    from neggen_core.pipeline.run import run_stage
    from neggen_core.pipeline.stages import open_store

    with tempfile.TemporaryDirectory() as root:
        config = load_config(REPO / "configs" / "office.yaml", [f"artifacts.root={root}"])
        ingest = run_stage(config, "ingest", {}).ref
        items = open_store(config).read_frame(ingest, "items", ITEMS)
    inputs = item_inputs(items)
    started = time.perf_counter()
    encoder = bundled_encoder()
    load = time.perf_counter() - started
    figures: dict[str, Any] = {"items": len(inputs), "encoder_load_seconds": round(load, 2)}
    for label, backend in (
        ("lexicons_only", LexiconBackend(None)),
        ("with_zero_shot", LexiconBackend(ZeroShot(encoder))),
    ):
        started = time.perf_counter()
        backend.extract(inputs)
        seconds = time.perf_counter() - started
        figures[label] = {
            "seconds": round(seconds, 2),
            "items_per_second": round(len(inputs) / seconds, 1),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--out", default=str(HERE / "results" / "llm_client.json"))
    args = parser.parse_args()
    report = {
        "vllm_backend_vs_standin": bench_vllm(args.requests, args.concurrency, args.latency),
        "offline_backend_office": bench_offline(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
