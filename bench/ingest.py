"""Ingest benchmark: the project's ingest stage vs a plain pandas + json.loads reference.

Both ingest the `baby`-scale demo catalogue (Amazon 2014 raw gzip: 160,792 reviews, 7,050 items)
through the same steps (parse, drop records without ids, drop duplicate pairs keeping the
earliest, iterative 5-core, dense indices, per-user time-ordered split, items joined to their
metadata, Parquet out), each in its own process, alternating, `--repeat` times. Prints and saves
wall time, rows/s and peak RSS of both and their ratio; checks they agree on the output counts.

    python bench/ingest.py [--data DIR] [--repeat 3] [--out bench/results/ingest.json]
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _peak_rss_mb() -> float:
    """Peak RSS of this process plus the largest of its finished subprocesses (the project
    parses metadata in one): an upper bound of what the run held at once."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024


def run_project(reviews: str, meta: str, out: str) -> dict[str, Any]:
    """The project's ingest stage, exactly as `neggen run --until ingest` runs it."""
    from neggen_core.config import load_config
    from neggen_core.pipeline.run import run_stage
    from neggen_core.pipeline.stages import open_store

    config = load_config(
        None,
        [
            f"artifacts.root={out}",
            "dataset.name=bench-baby",
            "dataset.demo=null",
            "dataset.format=amazon2014",
            f"dataset.interactions={reviews}",
            f"dataset.items={meta}",
        ],
    )
    started = time.perf_counter()
    outcome = run_stage(config, "ingest", {})
    seconds = time.perf_counter() - started
    info = open_store(config).manifest("ingest", outcome.ref.version).info
    return {
        "seconds": seconds,
        "counts": {k: info[k] for k in ("users", "items", "interactions", "split")},
    }


def run_reference(reviews: str, meta: str, out: str, k: int = 5) -> dict[str, Any]:
    """The same steps written the common way: json.loads per line into pandas."""
    import pandas as pd
    import pyarrow.parquet  # noqa: F401  (imported before the clock, as the project's is)

    started = time.perf_counter()
    with gzip.open(reviews, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    df = pd.DataFrame.from_records(
        records, columns=["reviewerID", "asin", "overall", "unixReviewTime"]
    ).rename(
        columns={
            "reviewerID": "user_id",
            "asin": "item_id",
            "overall": "rating",
            "unixReviewTime": "timestamp",
        }
    )
    df["rating"] = pd.to_numeric(df["rating"], errors="coerce")
    df["timestamp"] = pd.to_numeric(df["timestamp"], errors="coerce").astype("Int64")
    df["order"] = range(len(df))
    df = df.dropna(subset=["user_id", "item_id"])
    df = df.sort_values(["timestamp", "order"], kind="stable").drop_duplicates(
        ["user_id", "item_id"], keep="first"
    )
    while True:
        user_n = df.groupby("user_id")["item_id"].transform("size")
        item_n = df.groupby("item_id")["user_id"].transform("size")
        kept = df[(user_n >= k) & (item_n >= k)]
        if len(kept) == len(df):
            break
        df = kept
    df = df[df.groupby("user_id")["item_id"].transform("size") >= 3]
    users = pd.Series(sorted(df["user_id"].unique()))
    items = pd.Series(sorted(df["item_id"].unique()))
    df["user_idx"] = df["user_id"].map(pd.Series(range(len(users)), index=users)).astype("int32")
    df["item_idx"] = df["item_id"].map(pd.Series(range(len(items)), index=items)).astype("int32")
    df = df.sort_values(["user_idx", "timestamp", "order"], kind="stable")
    position = df.groupby("user_idx").cumcount()
    n = df.groupby("user_idx")["item_idx"].transform("size")
    held = (n // 10).clip(lower=1)
    df["split"] = "train"
    df.loc[position >= n - 2 * held, "split"] = "valid"
    df.loc[position >= n - held, "split"] = "test"

    with gzip.open(meta, "rt", encoding="utf-8") as handle:
        meta_records = [ast.literal_eval(line) for line in handle if line.strip()]
    meta_df = pd.DataFrame.from_records(meta_records).drop_duplicates("asin")
    meta_df["categories"] = meta_df["categories"].map(
        lambda paths: list(dict.fromkeys(c for path in paths for c in path))
    )
    item_table = (
        pd.DataFrame({"item_idx": range(len(items)), "item_id": items})
        .merge(meta_df, left_on="item_id", right_on="asin", how="left")
        .drop(columns=["asin"])
    )
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    df[["user_idx", "item_idx", "rating", "timestamp", "split"]].to_parquet(
        folder / "interactions.parquet"
    )
    item_table.to_parquet(folder / "items.parquet")
    seconds = time.perf_counter() - started
    split = df["split"].value_counts().to_dict()
    return {
        "seconds": seconds,
        "counts": {
            "users": len(users),
            "items": len(items),
            "interactions": len(df),
            "split": {s: int(split.get(s, 0)) for s in ("train", "valid", "test")},
        },
    }


def _child(kind: str, reviews: str, meta: str) -> None:
    with tempfile.TemporaryDirectory() as out:
        runner = run_project if kind == "project" else run_reference
        result = runner(reviews, meta, out)
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result))


def _measure(kind: str, reviews: str, meta: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, "--reviews", reviews, "--meta", meta]
    done = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--data", default=str(HERE / ".data" / "baby-seed7"), help="demo data folder"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "ingest.json"))
    parser.add_argument("--child", choices=("project", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--reviews", help=argparse.SUPPRESS)
    parser.add_argument("--meta", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.reviews, args.meta)
        return

    from neggen_core.demo.generator import META_FILE, REVIEWS_FILE, generate_demo

    data = Path(args.data)
    if not (data / META_FILE).exists():
        print(f"generating the baby-scale demo catalogue into {data} ...", flush=True)
        generate_demo(str(data), "baby", 7)
    reviews, meta = str(data / REVIEWS_FILE), str(data / META_FILE)
    with gzip.open(reviews, "rt") as handle:
        lines = sum(1 for _ in handle)

    runs: dict[str, list[dict[str, Any]]] = {"project": [], "reference": []}
    for attempt in range(args.repeat):
        for kind in ("project", "reference"):
            result = _measure(kind, reviews, meta)
            runs[kind].append(result)
            seconds, rss = result["seconds"], result["peak_rss_mb"]
            print(f"run {attempt + 1} {kind:<9} {seconds:7.2f} s {rss:7.0f} MB", flush=True)

    summary: dict[str, Any] = {}
    for kind, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        summary[kind] = {
            "seconds_median": round(seconds, 3),
            "seconds_all": [round(r["seconds"], 3) for r in results],
            "rows_per_second": round(lines / seconds),
            "peak_rss_mb": round(max(r["peak_rss_mb"] for r in results), 1),
            "counts": results[0]["counts"],
        }
    speedup = summary["reference"]["seconds_median"] / summary["project"]["seconds_median"]
    report = {
        "benchmark": "ingest, baby-scale demo (Amazon 2014 raw gzip)",
        "input_review_lines": lines,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "project": summary["project"],
        "reference": summary["reference"],
        "speedup_vs_reference": round(speedup, 2),
        "same_counts": summary["project"]["counts"] == summary["reference"]["counts"],
        "targets": {
            "under_20_s": summary["project"]["seconds_median"] < 20,
            "under_3_gb": summary["project"]["peak_rss_mb"] < 3 * 1024,
            "at_least_3x_reference": speedup >= 3,
        },
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
