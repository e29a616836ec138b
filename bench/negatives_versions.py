"""NegGen trained on one build of the negatives against NegGen on another: the same comparison
(`neggen compare`, the same grid, seeds and valid-only selection) run in two artifact roots, e.g.
before and after a change to the negatives stage, paired over the test users.

    python bench/negatives_versions.py --before ROOT_A --after ROOT_B [--dataset office]

Each root must hold a finished comparison. Its chosen NegGen (full model and each ablation) is
found among the root's train artifacts by the chosen values and seeds its report names; the
test Recall@20 and NDCG@20 of each user, averaged over the seeds, are compared with the same
paired sign-flip test as `neggen compare` (10,000 resamples), Holm over the metrics. Prints the
figures and saves them to bench/results/negatives_versions.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from neggen_core.compare.stats import holm, paired_test

HERE = Path(__file__).resolve().parent
METRICS = (("recall", 20), ("ndcg", 20))
RESAMPLES = 10_000


def _latest(folder: Path) -> Path:
    versions = sorted(
        folder.iterdir(), key=lambda p: json.loads((p / "manifest.json").read_text())["created_at"]
    )
    if not versions:
        raise SystemExit(f"{folder}: nothing built")
    return versions[-1]


def _value(settings: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        settings = settings[part]
    return settings


def _runs(dataset: Path, method: str, chosen: dict[str, Any], seeds: list[int]) -> list[Path]:
    """The evaluate artifacts of `method` ("neggen" or "neggen[ablation]") with the chosen
    values, one per seed."""
    ablation = method[len("neggen[") : -1] if "[" in method else "none"
    found: dict[int, Path] = {}
    for evaluate in sorted((dataset / "evaluate").iterdir()):
        manifest = json.loads((evaluate / "manifest.json").read_text())
        train = json.loads(
            (dataset / "train" / manifest["upstream"]["train"] / "manifest.json").read_text()
        )["config"]
        settings = {"train": train["train"]}
        if settings["train"]["model"] != "neggen":
            continue
        if settings["train"]["neggen"]["ablation"] != ablation:
            continue
        if any(_value(settings, key) != value for key, value in chosen.items()):
            continue
        if settings["train"]["seed"] in seeds:
            found[settings["train"]["seed"]] = evaluate
    missing = sorted(set(seeds) - found.keys())
    if missing:
        raise SystemExit(f"{dataset}: no {method} run with {chosen} for seeds {missing}")
    return [found[seed] for seed in seeds]


def _user_values(runs: list[Path], metric: str, k: int) -> np.ndarray:
    frames = [
        pl.read_parquet(run / "user_metrics" / "*.parquet")
        .filter((pl.col("metric") == metric) & (pl.col("k") == k))
        .sort("user_idx")
        for run in runs
    ]
    values: np.ndarray = np.mean([f["value"].to_numpy() for f in frames], axis=0)
    return values


def side(root: Path, dataset: str) -> dict[str, Any]:
    """A root's comparison: its report, and per compared NegGen method the per-user test
    values (averaged over seeds) by metric."""
    folder = root / dataset
    compare = _latest(folder / "compare")
    report = json.loads((compare / "report.json").read_text())
    seeds = [int(s) for s in report["seeds"]]
    users: dict[str, dict[str, np.ndarray]] = {}
    for key, chosen in report["chosen"].items():
        backbone, method = key.split(":", 1)
        if not method.startswith("neggen"):
            continue
        runs = _runs(folder, method, chosen, seeds)
        label = method if backbone == "lightgcn" else key
        users[label] = {f"{m}@{k}": _user_values(runs, m, k) for m, k in METRICS}
    negatives = _latest(folder / "negatives")
    return {
        "compare": str(compare),
        "negatives": json.loads((negatives / "report.json").read_text()),
        "report": report,
        "users": users,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="artifact root, before")
    parser.add_argument("--after", type=Path, required=True, help="artifact root, after")
    parser.add_argument("--dataset", default="office")
    args = parser.parse_args()
    before, after = side(args.before, args.dataset), side(args.after, args.dataset)
    tests = []
    for method in sorted(before["users"].keys() & after["users"].keys()):
        for metric in before["users"][method]:
            tests.append(
                paired_test(
                    after["users"][method][metric],
                    before["users"][method][metric],
                    method=f"{method} (after)",
                    baseline=f"{method} (before)",
                    metric=metric,
                    resamples=RESAMPLES,
                )
            )
    adjusted = holm([t.p_value for t in tests])

    def figures(one: dict[str, Any]) -> dict[str, Any]:
        negatives = one["negatives"]
        return {
            "compare": one["compare"],
            "verdict": one["report"]["verdict"],
            "significance": one["report"]["significance"],
            "per_seed": one["report"]["per_seed"],
            "negatives_valid": negatives["statuses"].get("valid", 0),
            "share_items_with_enough_valid": negatives["share_items_with_enough_valid"],
        }

    result = {
        "dataset": args.dataset,
        "before": figures(before),
        "after": figures(after),
        "after_vs_before": [
            {**t.as_dict(), "p_holm": p} for t, p in zip(tests, adjusted, strict=True)
        ],
    }
    for t, p in zip(tests, adjusted, strict=True):
        print(
            f"{t.method} vs {t.baseline}, {t.metric}: {t.mean_a:.4f} vs {t.mean_b:.4f}, "
            f"{t.difference:+.4f} [{t.ci_low:+.4f}, {t.ci_high:+.4f}], p {t.p_value:.4f}, "
            f"Holm p {p:.4f}"
        )
    out = HERE / "results" / "negatives_versions.json"
    out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"saved {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
