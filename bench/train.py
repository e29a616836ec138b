"""Training benchmark: seconds per epoch (train and valid evaluation apart) and peak RSS for
LightGCN+RNS, LightGCN+DNS, NegGen(LightGCN)+RNS, MF+RNS, FREEDOM+RNS (MMRec's settings),
VBPR+RNS and NegGen(FREEDOM)+RNS, side by side in one run, each method in its own process (so
that its peak RSS is its own); then full-ranking evaluation of every user (users/s). The
artifacts up to embeddings are built once (or reused) under --root. MMRec's FREEDOM on the same
Office split and machine is shown beside ours (measured outside this script; labelled so).

    python bench/train.py [--config configs/office.yaml] [--epochs 5]
    python bench/train.py --config demo-baby          # the baby-scale demo catalogue
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from neggen_core.config import NeggenConfig, load_config
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.models.registry import MethodId, build_model, build_sampler
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store
from neggen_core.train.compute import fit
from neggen_core.train.contract import load_training_data, reads_features

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

METHODS = {
    "lightgcn+rns": ["train.model=lightgcn", "train.sampler=rns"],
    "lightgcn+dns": ["train.model=lightgcn", "train.sampler=dns"],
    "neggen(lightgcn)+rns": ["train.model=neggen", "train.backbone=lightgcn", "train.sampler=rns"],
    "mf+rns": ["train.model=mf", "train.sampler=rns"],
    "freedom+rns": ["train.model=freedom", "train.sampler=rns"],
    "vbpr+rns": ["train.model=vbpr", "train.sampler=rns"],
    "neggen(freedom)+rns": ["train.model=neggen", "train.backbone=freedom", "train.sampler=rns"],
}
# MMRec's FREEDOM (dropout 0.8, reg_weight 0) on the Office split, on this machine (issue 19)
MMREC_FREEDOM_OFFICE = {"train_seconds_per_epoch": 0.4, "valid_eval_seconds_per_epoch": 0.6}


def _config(name: str, root: str, more: list[str]) -> NeggenConfig:
    overrides = [f"artifacts.root={root}", *more]
    if name == "demo-baby":
        return load_config(None, ["dataset.name=demo-baby", "dataset.demo.scale=baby", *overrides])
    return load_config(name, overrides)


def measure(name: str, root: str, method: str, epochs: int) -> dict[str, Any]:
    """One method's epochs (the first one apart, as warm-up) and a full evaluation."""
    config = _config(name, root, [*METHODS[method], f"train.epochs={epochs + 1}"])
    store = open_store(config)
    refs: dict[str, Any] = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings") + 1]:
        refs[stage] = run_stage(config, stage, refs).ref
    features = refs["embeddings"] if reads_features(config) else None
    negatives = "key" if config.train.model == "neggen" else None
    data = load_training_data(store, refs["ingest"], features, negatives=negatives)
    model = build_model(config.train, data)
    evaluator = Evaluator(data, config.evaluate)
    result = fit(model, build_sampler(config.train, data), data, evaluator, config.train)
    rows = result.log[1:]
    began = time.perf_counter()
    ranking = evaluator.rank(model, "test")
    full_eval = time.perf_counter() - began
    train_s = float(np.median([r["train_seconds"] for r in rows]))
    eval_s = float(np.median([r["eval_seconds"] for r in rows]))
    return {
        "method": MethodId.of(config.train).label,
        "train_seconds_per_epoch": round(train_s, 4),
        "valid_eval_seconds_per_epoch": round(eval_s, 4),
        "epoch_seconds": round(train_s + eval_s, 4),
        "test_eval_seconds": round(full_eval, 4),
        "eval_users": len(ranking.users),
        "eval_users_per_s": round(len(ranking.users) / full_eval, 1),
        "n_users": data.n_users,
        "n_items": data.n_items,
        "train_interactions": len(data.train_users),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "office.yaml"))
    parser.add_argument("--root", default=str(HERE / ".data" / "artifacts"))
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs after one warm-up")
    parser.add_argument("--out", help="JSON file (default: bench/results/train-<dataset>.json)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child process: measure one method
    args = parser.parse_args()

    if args.one:
        print(json.dumps(measure(args.config, args.root, args.one, args.epochs)))
        return
    _config(args.config, args.root, [])  # fail early on a bad config
    results: dict[str, Any] = {"config": args.config, "timed_epochs": args.epochs, "methods": {}}
    for method in METHODS:
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--config",
                args.config,
                "--root",
                args.root,
                "--epochs",
                str(args.epochs),
                "--one",
                method,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        results["methods"][method] = json.loads(child.stdout.strip().splitlines()[-1])
        print(method, results["methods"][method], flush=True)
    methods = results["methods"]
    results["neggen_epoch_over_lightgcn_rns"] = round(
        methods["neggen(lightgcn)+rns"]["epoch_seconds"] / methods["lightgcn+rns"]["epoch_seconds"],
        3,
    )
    freedom = methods["freedom+rns"]["epoch_seconds"]
    results["freedom_epoch_over_lightgcn_rns"] = round(
        freedom / methods["lightgcn+rns"]["epoch_seconds"], 3
    )
    dataset = _config(args.config, args.root, []).dataset.name
    if dataset == "office":
        mmrec = MMREC_FREEDOM_OFFICE
        results["mmrec_freedom"] = {
            **mmrec,
            "source": "MMRec (enoche/MMRec), measured outside this script on this machine",
        }
        results["freedom_epoch_over_mmrec"] = round(freedom / sum(mmrec.values()), 3)
    out = Path(args.out or HERE / "results" / f"train-{dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "methods"}, indent=2))


if __name__ == "__main__":
    main()
