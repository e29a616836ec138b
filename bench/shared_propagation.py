"""NegGen's per-user choice and its loss on one graph propagation per step, against the
propagation done twice (as before issue 21): train seconds per epoch side by side, alternated in
one process, and whether the two train the same model bit for bit.

    python bench/shared_propagation.py --config configs/games.yaml --root /tmp/scale/games

The artifacts up to embeddings are built once (or reused) under --root.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neggen_core.config import load_config
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.models.backbones import Layers
from neggen_core.models.base import Batch, Losses
from neggen_core.models.neggen import NegGen
from neggen_core.models.registry import build_model, build_sampler
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store
from neggen_core.train.compute import fit
from neggen_core.train.contract import load_training_data

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


class Propagating(NegGen):
    """NegGen whose loss propagates the graph again, whatever the trainer passes it."""

    def calculate_loss(self, batch: Batch, layers: Layers | None = None) -> Losses:
        return super().calculate_loss(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "games.yaml"))
    parser.add_argument("--root", required=True)
    parser.add_argument("--epochs", type=int, default=1, help="epochs per fit")
    parser.add_argument("--repeats", type=int, default=2, help="fits of each, alternated")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(HERE / "results" / "shared_propagation.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = load_config(
        args.config, [f"artifacts.root={args.root}", f"train.epochs={args.epochs}"]
    )
    refs: dict[str, Any] = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings") + 1]:
        refs[stage] = run_stage(config, stage, refs).ref
    data = load_training_data(open_store(config), refs["ingest"], refs["embeddings"])
    evaluator = Evaluator(data, config.evaluate)
    seconds: dict[str, list[float]] = {"shared": [], "twice": []}
    states: dict[str, dict[str, torch.Tensor]] = {}
    for repeat in range(args.repeats):
        for variant in seconds:
            model = build_model(config.train, data)
            assert isinstance(model, NegGen)
            if variant == "twice":
                model.__class__ = Propagating
            result = fit(model, build_sampler(config.train, data), data, evaluator, config.train)
            seconds[variant].extend(row["train_seconds"] for row in result.log)
            states[variant] = result.best_state
            print(variant, repeat, [round(r["train_seconds"], 2) for r in result.log], flush=True)
    same = all(torch.equal(v, states["twice"][k]) for k, v in states["shared"].items())
    median = {k: float(np.median(v)) for k, v in seconds.items()}
    results = {
        "config": args.config,
        "threads": args.threads,
        "n_users": data.n_users,
        "n_items": data.n_items,
        "train_interactions": len(data.train_users),
        "train_seconds_per_epoch": {k: [round(s, 3) for s in v] for k, v in seconds.items()},
        "median_train_seconds_per_epoch": {k: round(v, 3) for k, v in median.items()},
        "shared_over_twice": round(median["shared"] / median["twice"], 3),
        "same_bits": same,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "train_seconds_per_epoch"}))


if __name__ == "__main__":
    main()
