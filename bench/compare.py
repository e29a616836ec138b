"""Comparison benchmark, side by side in one run: the same reduced comparison (by default four
LightGCN methods x 2 seeds on Office, no grid, a fixed number of epochs) trained on 1 worker
(all cores to one run at a time), then on 2 worker processes (half the cores each), then on a
local Dask cluster of 2 workers (`--runners` chooses),
each from its own fresh artifact root that shares the data stages. Each is one `neggen compare`
process.

Prints and saves each runner's wall time, the ratio to 1 worker, the runs' epoch time summed
(above the wall time where runs overlapped), and whether every result table (all columns but
wall-clock seconds) equals 1 worker's.

    python bench/compare.py [--config configs/office.yaml] [--epochs 40] [--runners ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from neggen_core.artifacts.schemas import COMPARISON
from neggen_core.compare.stage import DATA_STAGES, result_tables
from neggen_core.config import load_config
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

RUNNERS = {
    "one_worker": [
        "orchestration.task_runner.kind=thread",
        "orchestration.task_runner.max_workers=1",
    ],
    "two_processes": [
        "orchestration.task_runner.kind=process",
        "orchestration.task_runner.max_workers=2",
    ],
    "dask_two_workers": [
        "orchestration.task_runner.kind=dask",
        "orchestration.task_runner.max_workers=2",
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "office.yaml"))
    parser.add_argument("--root", default=str(HERE / ".data" / "artifacts"))
    parser.add_argument("--work", default=str(HERE / ".data" / "compare"))
    parser.add_argument(
        "--methods", nargs="+", default=["rns", "dns", "neggen", "neggen[real_only]"]
    )
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40, help="every run trains this many epochs")
    parser.add_argument(
        "--runners",
        nargs="+",
        choices=list(RUNNERS),
        default=["one_worker", "two_processes", "dask_two_workers"],
        help="the first is the reference",
    )
    parser.add_argument("--out", default=str(HERE / "results" / "compare.json"))
    args = parser.parse_args()

    plan = [
        f"train.epochs={args.epochs}",
        f"train.patience={args.epochs}",
        "compare.grid={}",
    ]
    config = load_config(args.config, [f"artifacts.root={args.root}", *plan])
    refs: dict[str, Any] = {}
    for stage in DATA_STAGES:  # built once (or reused), shared by every runner's root
        refs[stage] = run_stage(config, stage, refs).ref
    dataset = config.dataset.name

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    runners = args.runners
    results: dict[str, Any] = {
        "config": args.config,
        "methods": args.methods,
        "backbone": "lightgcn",
        "seeds": args.seeds,
        "epochs": args.epochs,
        "cores": os.cpu_count(),
        "runners": {},
    }
    tables = {}
    for runner in runners:
        root = work / runner
        for stage in DATA_STAGES:  # hard links: the same files, no copy
            shutil.copytree(
                Path(args.root, dataset, stage, refs[stage].version),
                root / dataset / stage / refs[stage].version,
                copy_function=os.link,
            )
        settings = [f"artifacts.root={root}", *plan, *RUNNERS[runner]]
        command = [sys.executable, "-m", "neggen", "compare", "--config", args.config]
        command += [f"--set={s}" for s in settings]
        command += ["--methods", *args.methods, "--backbones", "lightgcn", "--seeds"]
        command += [str(args.seeds)]
        home = work / "prefect" / runner
        home.mkdir(parents=True)
        env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        began = time.perf_counter()
        done = subprocess.run(
            command, cwd=REPO, env=env, check=True, stdout=subprocess.PIPE, text=True
        )
        wall = time.perf_counter() - began
        uri = next(line[9:] for line in done.stdout.splitlines() if line.startswith("compare: "))
        store = open_store(load_config(args.config, settings))
        ref = store.ref("compare", Path(uri).name)
        tables[runner] = result_tables(store, ref)
        runs = store.read_frame(ref, "comparison", COMPARISON).unique(["method", "seed"])
        results["runners"][runner] = {
            "wall_seconds": round(wall, 1),
            # epochs' time summed over the runs: above the wall time where runs overlapped
            "train_seconds_of_runs": round(float(runs["train_seconds"].sum()), 1),
            "settings": RUNNERS[runner],
        }
        print(runner, f"{wall:.1f} s", flush=True)

    first = runners[0]
    for runner in runners:
        entry = results["runners"][runner]
        entry["over_one_worker"] = round(
            entry["wall_seconds"] / results["runners"][first]["wall_seconds"], 3
        )
        entry["tables_equal_to_one_worker"] = all(
            tables[runner][name].equals(tables[first][name]) for name in tables[first]
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
