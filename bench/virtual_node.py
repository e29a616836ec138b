"""NegGen(FREEDOM) with its generated negatives as virtual nodes of FREEDOM's item-item graph
(`train.neggen.virtual_node: true`: a negative's graph term from its own nearest real items)
against NegGen(FREEDOM) as compared (the negative takes its positive's place in the graph).

    python bench/virtual_node.py [--config configs/office.yaml] [--set artifacts.root=...]

The root must hold a finished comparison with NegGen on FREEDOM. Both variants are trained with
the values that comparison chose for NegGen(FREEDOM) (selected on valid; the virtual node is not
tuned on its own, which can only disfavour it) and its seeds; the plain runs are the
comparison's own (reused, not retrained). Test Recall@20 and NDCG@20 per user, averaged over the
seeds, are compared with the comparison's paired sign-flip test (10,000 resamples), Holm over
the two metrics; valid Recall@20 is reported beside. Prints the figures and saves them to
bench/results/virtual_node.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.compare.plan import Method, Run, built_plan
from neggen_core.compare.stats import holm, paired_test
from neggen_core.config import NeggenConfig, load_config, with_settings
from neggen_core.evaluate.contract import read_report, read_user_metrics
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store

HERE = Path(__file__).resolve().parent
METRICS = (("recall", 20), ("ndcg", 20))
RESAMPLES = 10_000
METHOD = Method("freedom", "neggen")


def _evaluate(config: NeggenConfig) -> ArtifactRef:
    refs: dict[str, ArtifactRef] = {}
    for stage in STAGE_ORDER:
        refs[stage] = run_stage(config, stage, refs).ref
    return refs["evaluate"]


def _users(config: NeggenConfig, refs: list[ArtifactRef], metric: str, k: int) -> np.ndarray:
    store = open_store(config)
    frames = [
        read_user_metrics(store, ref)
        .filter((pl.col("metric") == metric) & (pl.col("k") == k))
        .sort("user_idx")
        for ref in refs
    ]
    values: np.ndarray = np.mean([f["value"].to_numpy() for f in frames], axis=0)
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE.parent / "configs" / "office.yaml"))
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", default=str(HERE / "results" / "virtual_node.json"))
    args = parser.parse_args()
    base = load_config(args.config, args.overrides)
    # the comparison's FREEDOM methods only: the other backbones need not be built here
    freedom = {"freedom": base.compare.methods["freedom"]}
    plan = built_plan(with_settings(base, {"compare.methods": freedom}))
    chosen = plan.chosen[METHOD]
    variants: dict[str, list[ArtifactRef]] = {"plain": [], "virtual": []}
    for seed in plan.seeds:
        config = Run(METHOD, seed, chosen).config(base)
        variants["plain"].append(_evaluate(config))
        virtual = with_settings(config, {"train.neggen.virtual_node": True})
        variants["virtual"].append(_evaluate(virtual))
        print(f"seed {seed} built", flush=True)

    store = open_store(base)
    tests = [
        paired_test(
            _users(base, variants["virtual"], metric, k),
            _users(base, variants["plain"], metric, k),
            method="neggen(freedom) virtual node",
            baseline="neggen(freedom)",
            metric=f"{metric}@{k}",
            resamples=RESAMPLES,
        )
        for metric, k in METRICS
    ]
    adjusted = holm([t.p_value for t in tests])
    per_seed: dict[str, Any] = {
        name: [
            {
                "seed": seed,
                "valid_recall@20": read_report(store, ref)["valid"]["recall@20"],
                "test_recall@20": read_report(store, ref)["test"]["recall@20"],
                "test_ndcg@20": read_report(store, ref)["test"]["ndcg@20"],
            }
            for seed, ref in zip(plan.seeds, refs, strict=True)
        ]
        for name, refs in variants.items()
    }
    result = {
        "config": args.config,
        "chosen": dict(chosen),
        "seeds": list(plan.seeds),
        "per_seed": per_seed,
        "tests": [
            {
                "metric": t.metric,
                "virtual": round(t.mean_a, 5),
                "plain": round(t.mean_b, 5),
                "difference": round(t.difference, 5),
                "ci": [round(t.ci_low, 5), round(t.ci_high, 5)],
                "p": round(t.p_value, 4),
                "p_holm": round(p, 4),
                "significant": p < 0.05,
            }
            for t, p in zip(tests, adjusted, strict=True)
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
