"""Embeddings benchmark, side by side in one run on the same texts: the whole embeddings stage
(reading its inputs, encoding in resumable parts, writing the tables, the FAISS index and the
near-duplicate search) on a fresh version with the encoder run by torch, then by OpenVINO
(`embeddings.encoder_backend`), the vector cache off so that both encode every text.

Prints and saves texts/s of each and their ratio, the largest cosine distance between the two
backends' vectors of the same text, FAISS top-20 search for every item (exact, and HNSW with its
recall against exact) and the peak RSS.

    python bench/embeddings.py [--config configs/office.yaml] [--root bench/.data/artifacts]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

from neggen_core.artifacts.vectors import vectors_of
from neggen_core.attributes.contract import read_attributes, read_descriptions
from neggen_core.config import load_config
from neggen_core.embeddings.compute import embedding_inputs
from neggen_core.embeddings.contract import load_index, read_embeddings
from neggen_core.encoders.cached import text_key
from neggen_core.encoders.index import IndexSettings, ItemIndex
from neggen_core.encoders.text import TextEncoder
from neggen_core.ingest.contract import read_items
from neggen_core.negatives.contract import read_negatives
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _search_rate(index: ItemIndex, queries: np.ndarray, k: int, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        index.search(queries, k)
        times.append(time.perf_counter() - began)
    return len(queries) / float(np.median(times))


def cpu() -> dict[str, Any]:
    """The CPU's model, cores and the instruction sets that decide OpenVINO's speed (bf16 on
    AMX, on AVX-512 BF16, else f32)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields = {
        k.strip(): v.strip() for k, _, v in (line.partition(":") for line in info.splitlines())
    }
    flags = set(fields.get("flags", "").split())
    return {
        "model": fields.get("model name", ""),
        "cores": os.cpu_count(),
        "amx": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512": "avx512f" in flags,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "office.yaml"))
    parser.add_argument("--root", default=str(HERE / ".data" / "artifacts"))
    parser.add_argument("--out", default=str(HERE / "results" / "embeddings.json"))
    args = parser.parse_args()

    base = [f"artifacts.root={args.root}", "embeddings.vector_cache=false"]
    config = load_config(args.config, base)
    store = open_store(config)
    refs = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings")]:
        refs[stage] = run_stage(config, stage, refs).ref
    texts = embedding_inputs(
        read_items(store, refs["ingest"]),
        read_descriptions(store, refs["attributes"]),
        read_negatives(store, refs["negatives"]),
        read_attributes(store, refs["attributes"]) if config.embeddings.attribute_text else None,
    ).texts()

    runs: dict[str, dict[str, Any]] = {}
    vectors: dict[str, np.ndarray] = {}
    for backend in ("torch", "openvino"):
        backend_config = load_config(args.config, [*base, f"embeddings.encoder_backend={backend}"])
        settings = backend_config.embeddings
        began = time.perf_counter()
        TextEncoder(settings.encoder, settings.encode_batch_size, backend).encode(texts[-64:])
        load_seconds = time.perf_counter() - began  # load (and convert) and warm up, untimed
        version = plan_versions(backend_config)["embeddings"]
        for path in (store.path("embeddings", v) for v in (version, f".staging-{version}")):
            if store.fs.exists(path):
                store.fs.rm(path, recursive=True)
        outcome = run_stage(backend_config, "embeddings", refs)
        report = store.read_json(outcome.ref, "report.json")
        written = read_embeddings(store, outcome.ref, "text_vectors")
        row_of = {key: row for row, key in enumerate(written.column("text_sha256").to_pylist())}
        order = np.array([row_of[text_key(t)] for t in texts])
        vectors[backend] = vectors_of(written.column("vector"))[order]
        runs[backend] = {
            "backend_used": report["encoder_backend"],
            "load_and_warm_up_seconds": round(load_seconds, 2),
            "stage_seconds": round(outcome.seconds, 2),
            "stage_texts_per_s": round(len(texts) / outcome.seconds, 2),
            "texts_encoded": report["texts_encoded_this_attempt"],
        }
    cosine = (vectors["torch"] * vectors["openvino"]).sum(axis=1)

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
        "encoder": config.embeddings.encoder,
        "cpu": cpu(),
        "distinct_texts": len(texts),
        "items": len(item_vectors),
        "runs": runs,
        "openvino_vs_torch_stage_speed": round(
            runs["torch"]["stage_seconds"] / runs["openvino"]["stage_seconds"], 2
        ),
        "max_cosine_distance_openvino_vs_torch": float(1 - cosine.min()),
        "mean_cosine_distance_openvino_vs_torch": float(1 - cosine.mean()),
        "faiss_exact_top20_queries_per_s": round(_search_rate(exact, item_vectors, 20), 1),
        "faiss_hnsw_top20_queries_per_s": round(_search_rate(hnsw, item_vectors, 20), 1),
        "faiss_hnsw_recall_at_20_vs_exact": round(float(recall), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "targets": {
            "openvino_at_least_3.5x_torch": runs["torch"]["stage_seconds"]
            >= 3.5 * runs["openvino"]["stage_seconds"],
            "max_cosine_distance_at_most_1e-4": float(1 - cosine.min()) <= 1e-4,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
