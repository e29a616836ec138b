"""Embeddings benchmark, side by side in one run on the same texts:

1. the encoder's raw `model.encode` over every distinct text the stage embeds (one call, the
   stage's forward-pass batch size), and
2. the whole embeddings stage (reading its inputs, encoding in resumable parts, writing the
   tables, the FAISS index and the near-duplicate search) on a fresh version,

as texts/s and their ratio; then FAISS top-20 search for every item (exact, and HNSW with its
recall against exact), the stage's vectors against the raw ones, and the peak RSS.

    python bench/embeddings.py [--config configs/office.yaml] [--root bench/.data/artifacts]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from neggen_core.config import load_config  # noqa: E402
from neggen_core.embeddings.stage import (  # noqa: E402
    gather_inputs,
    load_index,
    read_embeddings,
    text_key,
    vectors_of,
)
from neggen_core.encoders.index import IndexSettings, ItemIndex  # noqa: E402
from neggen_core.encoders.text import TextEncoder  # noqa: E402
from neggen_core.stages import STAGE_ORDER, open_store, plan_versions, run_stage  # noqa: E402


def _search_rate(index: ItemIndex, queries: np.ndarray, k: int, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        index.search(queries, k)
        times.append(time.perf_counter() - began)
    return len(queries) / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "office.yaml"))
    parser.add_argument("--root", default=str(HERE / ".data" / "artifacts"))
    parser.add_argument("--out", default=str(HERE / "results" / "embeddings.json"))
    args = parser.parse_args()

    config = load_config(args.config, [f"artifacts.root={args.root}"])
    store = open_store(config)
    refs = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings")]:
        refs[stage] = run_stage(config, stage, refs).ref
    inputs = gather_inputs(store, refs)
    texts = inputs.texts()
    settings = config.embeddings

    began = time.perf_counter()
    encoder = TextEncoder(settings.encoder, settings.encode_batch_size)
    load_seconds = time.perf_counter() - began
    encoder.encode(texts[-64:])  # warm-up, outside both timings

    began = time.perf_counter()
    raw = encoder.model.encode(
        texts,
        batch_size=settings.encode_batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    raw_seconds = time.perf_counter() - began

    version = plan_versions(config)["embeddings"]
    stale = [store.path("embeddings", v) for v in (version, f".staging-{version}")]
    for path in stale:
        if store.fs.exists(path):
            store.fs.rm(path, recursive=True)
    outcome = run_stage(config, "embeddings", refs)
    stage_seconds = outcome.seconds

    written = read_embeddings(store, outcome.ref, "text_vectors")
    stage_vectors = vectors_of(written.column("vector"))
    row_of = {key: row for row, key in enumerate(written.column("text_sha256").to_pylist())}
    order = np.array([row_of[text_key(t)] for t in texts])
    max_difference = float(np.abs(stage_vectors[order] - raw).max())

    items = read_embeddings(store, outcome.ref, "item_embeddings")
    item_vectors = vectors_of(items.column("vector"))
    exact = load_index(store, outcome.ref)
    hnsw = ItemIndex.build(item_vectors, IndexSettings(exact_max_items=0))
    _, exact_top = exact.search(item_vectors, 20)
    _, hnsw_top = hnsw.search(item_vectors, 20)
    recall = np.mean(
        [len(set(a) & set(b)) / len(a) for a, b in zip(exact_top, hnsw_top, strict=True)]
    )

    results: dict[str, Any] = {
        "config": args.config,
        "dataset": config.dataset.name,
        "encoder": encoder.name,
        "dim": encoder.dim,
        "encoder_load_seconds": round(load_seconds, 2),
        "distinct_texts": len(texts),
        "items": len(item_vectors),
        "negatives_embedded": inputs.negatives.height,
        "raw_encode_seconds": round(raw_seconds, 2),
        "raw_texts_per_s": round(len(texts) / raw_seconds, 2),
        "stage_seconds": round(stage_seconds, 2),
        "stage_texts_per_s": round(len(texts) / stage_seconds, 2),
        "stage_share_of_raw": round(raw_seconds / stage_seconds, 4),
        "max_abs_difference_stage_vs_raw": max_difference,
        "faiss_exact_top20_queries_per_s": round(_search_rate(exact, item_vectors, 20), 1),
        "faiss_hnsw_top20_queries_per_s": round(_search_rate(hnsw, item_vectors, 20), 1),
        "faiss_hnsw_recall_at_20_vs_exact": round(float(recall), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    for name, value in results.items():
        print(f"{name:40s} {value}")


if __name__ == "__main__":
    main()
