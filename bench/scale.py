"""Cost growth from Office to Games: the whole pipeline from an empty artifact root, stage by
stage, Office then Games in one run, and how each stage's time grows against its input.

Each stage runs as `neggen run --from S --until S` (the Prefect flow, as a user runs it) in its
own process. Per stage: the stage's own time (from its log line: shards included, Prefect's
start-up not), the process's wall time, peak RSS of the process tree (the CLI, its shard
workers and the temporary Prefect server, sampled every 0.1 s) and of its largest process, the
rows it wrote, and for training the epochs and seconds per epoch. Then a full-ranking
evaluation of every user of Games with no k-core (25,372 users x 16,414 items) with the trained
model's embedding width, timed alone.

    python bench/scale.py [--datasets office games] [--keep DIR] [--set train.device=cuda]

Prints a table and writes bench/results/scale.json (with the Games/Office ratio of each stage's
time next to the ratio of its input, and the growth exponent log(time ratio)/log(input ratio):
1 is linear in the input).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CONFIGS = {"office": REPO / "configs" / "office.yaml", "games": REPO / "configs" / "games.yaml"}
STAGES = ("ingest", "attributes", "negatives", "embeddings", "train", "evaluate")
BUILT = re.compile(r"(\w+): built version (\w+) in ([\d.]+) s")
GB = 1024**3


class PeakRss(threading.Thread):
    """The highest RSS of a process tree (summed) and of its largest process, sampled."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root, self.every = psutil.Process(pid), every
        self.tree, self.largest = 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rss = []
            try:
                for proc in [self.root, *self.root.children(recursive=True)]:
                    try:
                        rss.append(proc.memory_info().rss)
                    except psutil.Error:
                        continue
            except psutil.Error:
                break
            if rss:
                self.tree, self.largest = max(self.tree, sum(rss)), max(self.largest, max(rss))
            self.done.wait(self.every)


def run_stage(config: Path, root: Path, stage: str, more: list[str]) -> dict[str, Any]:
    """One stage through the CLI, with its time, memory and the manifest it committed."""
    sets = [f"artifacts.root={root}", *more]
    command = [sys.executable, "-m", "neggen.cli", "run", "--config", str(config)]
    command += [arg for value in sets for arg in ("--set", value)]
    command += ["--from", stage, "--until", stage]
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    began = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = PeakRss(process.pid)
    peak.start()
    output, _ = process.communicate()
    wall = time.perf_counter() - began
    peak.done.set()
    peak.join()
    if process.returncode != 0:
        sys.exit(f"{stage} failed ({process.returncode}):\n{output[-4000:]}")
    built = {m.group(1): (m.group(2), float(m.group(3))) for m in BUILT.finditer(output)}
    version, seconds = built[stage]
    dataset = next(p for p in root.iterdir() if p.is_dir())
    manifest = json.loads((dataset / stage / version / "manifest.json").read_text())
    info = manifest.get("info", {})
    if stage == "ingest":
        report = json.loads((dataset / stage / version / "report.json").read_text())
        info["records_read"] = report["records_read"]
    return {
        "version": version,
        "seconds": seconds,
        "process_wall_seconds": round(wall, 1),
        "peak_rss_gb": round(peak.tree / GB, 3),
        "largest_process_rss_gb": round(peak.largest / GB, 3),
        "rows_out": {name: table["rows"] for name, table in manifest["tables"].items()},
        "info": info,
    }


def inputs(stages: dict[str, Any]) -> dict[str, int]:
    """Each stage's input size: what its cost should grow with."""
    ingest = stages["ingest"]["info"]
    train = stages["train"]["info"]
    return {
        "ingest": ingest["records_read"],  # interactions read from the raw file
        "attributes": ingest["items"],
        "negatives": ingest["items"],
        "embeddings": stages["embeddings"]["info"]["unique_texts"],
        # per epoch, train interactions; the total also grows with the epochs run
        "train": ingest["split"]["train"] * train["epochs"],
        "evaluate": ingest["users"] * ingest["items"],  # full ranking: every user x every item
    }


def ranking_all_users(more: list[str]) -> dict[str, Any]:
    """A full-ranking evaluation of every Games user and item (no k-core): the model's
    embeddings random (the ranking's cost does not depend on them), the evaluator as trained
    models use it."""
    import torch

    from neggen_core.config import load_config
    from neggen_core.evaluation.evaluator import Evaluator
    from neggen_core.models.registry import build_model
    from neggen_core.pipeline.run import run_stage as run_in_process
    from neggen_core.pipeline.stages import open_store
    from neggen_core.train.contract import load_training_data

    with tempfile.TemporaryDirectory() as root:
        config = load_config(
            CONFIGS["games"],
            [f"artifacts.root={root}", "ingest.k_core=0", "train.model=lightgcn", *more],
        )
        ingest = run_in_process(config, "ingest", {}).ref
        data = load_training_data(open_store(config), ingest, None)
        model = build_model(config.train, data)
        evaluator = Evaluator(data, config.evaluate)
        evaluator.rank(model, "valid")  # warm-up
        seconds = []
        for _ in range(3):
            began = time.perf_counter()
            ranking = evaluator.rank(model, "valid")
            seconds.append(time.perf_counter() - began)
        return {
            "users": len(ranking.users),
            "items": data.n_items,
            "device": str(model.device),
            "torch_threads": torch.get_num_threads(),
            "seconds": [round(s, 3) for s in seconds],
            "best_seconds": round(min(seconds), 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--keep", type=Path, help="build under this folder and keep it")
    parser.add_argument("--set", dest="more", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    parser.add_argument(
        "--ranking-only",
        action="store_true",
        help="measure only the full ranking of every Games user, replacing that entry in --out",
    )
    args = parser.parse_args()
    if args.ranking_only:
        results = json.loads(args.out.read_text())
        results["ranking_all_games_users"] = ranking_all_users(args.more)
        print(f"full ranking, every Games user: {results['ranking_all_games_users']}")
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
        return

    results: dict[str, Any] = {"datasets": {}, "settings": args.more}
    for name in args.datasets:
        with tempfile.TemporaryDirectory() as scratch:
            root = (args.keep / name) if args.keep else Path(scratch)
            root.mkdir(parents=True, exist_ok=True)
            if any(root.iterdir()):
                sys.exit(f"{root} is not empty: the bench builds from an empty root")
            stages: dict[str, Any] = {}
            for stage in STAGES:
                stages[stage] = run_stage(CONFIGS[name], root, stage, args.more)
                print(
                    f"{name:7} {stage:11} {stages[stage]['seconds']:8.1f} s "
                    f"(process {stages[stage]['process_wall_seconds']:.0f} s), "
                    f"peak RSS {stages[stage]['peak_rss_gb']:.2f} GB",
                    flush=True,
                )
            train = stages["train"]["info"]
            ingest = stages["ingest"]["info"]
            results["datasets"][name] = {
                "config": str(CONFIGS[name].relative_to(REPO)),
                "users": ingest["users"],
                "items": ingest["items"],
                "interactions": ingest["interactions"],
                "texts_encoded": stages["embeddings"]["info"]["unique_texts"],
                "stages": stages,
                "inputs": inputs(stages),
                "total_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
                "peak_rss_gb": max(s["peak_rss_gb"] for s in stages.values()),
                "train": {
                    "method": train["method"],
                    "epochs": train["epochs"],
                    "best_epoch": train["best_epoch"],
                    "train_seconds_per_epoch": train["train_seconds_per_epoch"],
                    "eval_seconds_per_epoch": train["eval_seconds_per_epoch"],
                },
            }

    if {"office", "games"} <= results["datasets"].keys():
        office, games = results["datasets"]["office"], results["datasets"]["games"]
        sizes = {
            key: round(games[key] / office[key], 2)
            for key in ("users", "items", "interactions", "texts_encoded")
        }
        growth = {}
        for stage in STAGES:
            time_ratio = games["stages"][stage]["seconds"] / office["stages"][stage]["seconds"]
            input_ratio = games["inputs"][stage] / office["inputs"][stage]
            growth[stage] = {
                "time_ratio": round(time_ratio, 2),
                "input_ratio": round(input_ratio, 2),
                "exponent": round(math.log(time_ratio) / math.log(input_ratio), 2),
                "rss_ratio": round(
                    games["stages"][stage]["peak_rss_gb"] / office["stages"][stage]["peak_rss_gb"],
                    2,
                ),
            }
        per_epoch = {
            key: round(games["train"][key] / office["train"][key], 2)
            for key in ("train_seconds_per_epoch", "eval_seconds_per_epoch", "epochs")
        }
        fastest = max(growth, key=lambda stage: growth[stage]["exponent"])
        results["games_over_office"] = {
            "data": sizes,
            "stages": growth,
            "train_per_epoch": per_epoch,
            "fastest_growing_stage": fastest,
        }
        print(f"\nGames / Office: data {sizes}")
        print(f"{'stage':11} {'time x':>7} {'input x':>8} {'exponent':>9} {'RSS x':>6}")
        for stage, row in growth.items():
            print(
                f"{stage:11} {row['time_ratio']:7.2f} {row['input_ratio']:8.2f} "
                f"{row['exponent']:9.2f} {row['rss_ratio']:6.2f}"
            )
        print(f"train per epoch: {per_epoch}; fastest growing: {fastest}")

    if "games" in args.datasets:
        results["ranking_all_games_users"] = ranking_all_users(args.more)
        print(f"full ranking, every Games user: {results['ranking_all_games_users']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
