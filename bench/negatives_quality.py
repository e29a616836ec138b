"""What the offline negatives are like on a real catalogue (Office by default): which attribute
each negative changes, which values replace them and how often, whether a number keeps its unit
and stays in its category's observed range, how close the negatives are to their positives in the
encoder's space (near-copies rejected at 0.99, measured with the attribute texts) and how many
items get enough valid negatives. The stage's
time is given with and without the encoding of its near-copy check (`--root` keeps the vector
cache: a rerun there encodes nothing).

    python bench/negatives_quality.py [--config configs/office.yaml] [--root DIR]

Prints the figures and saves them to bench/results/negatives_quality.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from neggen_core.attributes.contract import item_categories, read_attributes
from neggen_core.config import load_config
from neggen_core.ingest.contract import read_items
from neggen_core.negatives.contract import read_negatives
from neggen_core.negatives.lexicon import NUMBER
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _number(value: str) -> tuple[float, str] | None:
    match = NUMBER.fullmatch(value.strip().lower())
    return None if match is None else (float(match.group(1)), (match.group(2) or "").strip())


def quality(config_path: Path, root: str) -> dict[str, Any]:
    config = load_config(
        config_path,
        [
            f"artifacts.root={root}",
            "negatives.controls=false",
            "negatives.max_cosine=0.99",
            "embeddings.attribute_text=true",
        ],
    )
    ingest = run_stage(config, "ingest", {}).ref
    attributes = run_stage(config, "attributes", {"ingest": ingest}).ref
    started = time.perf_counter()
    outcome = run_stage(config, "negatives", {"ingest": ingest, "attributes": attributes})
    seconds = time.perf_counter() - started
    store = open_store(config)
    negatives = read_negatives(store, outcome.ref).filter(pl.col("kind") == "key")
    valid = negatives.filter(pl.col("status") == "valid")
    changes = (
        valid.select("item_idx", "interventions").explode("interventions").unnest("interventions")
    )
    report = store.read_json(outcome.ref, "report.json")
    per_name = changes.group_by("name").len().sort("len", descending=True)

    # numeric changes: the same unit, and inside the category's observed range of that unit
    items = read_items(store, ingest)
    categories = item_categories(items, config.attributes.category_level)
    observed = read_attributes(store, attributes).join(categories, on="item_idx")
    ranges: dict[tuple[str, str, str, str], tuple[float, float]] = {}
    for category, modality, name, value in observed.select(
        "category", "modality", "name", "value"
    ).iter_rows():
        parsed = _number(value) if name != "brand" else None
        if parsed is not None:
            key = (category, modality, name, parsed[1])
            low, high = ranges.get(key, (parsed[0], parsed[0]))
            ranges[key] = (min(low, parsed[0]), max(high, parsed[0]))
    numeric = other_unit = outside = 0
    with_category = changes.join(categories, on="item_idx")
    for category, modality, name, before, after in with_category.select(
        "category", "modality", "name", "from_value", "to_value"
    ).iter_rows():
        old, new = (_number(before), _number(after)) if name != "brand" else (None, None)
        if old is None or new is None:
            continue
        numeric += 1
        if old[1] != new[1]:
            other_unit += 1
            continue
        low, high = ranges[(category, modality, name, new[1])]
        outside += not low <= new[0] <= high
    per_item = valid.group_by("item_idx").len()
    enough = per_item.filter(pl.col("len") >= 4).height
    return {
        "config": str(config_path.relative_to(REPO)),
        "negatives_valid": valid.height,
        "negatives_written": negatives.height,
        "negatives_stage_seconds": round(seconds, 1),
        "encode_seconds": report["encode_seconds_this_attempt"],
        "negatives_stage_seconds_without_encoding": round(
            seconds - report["encode_seconds_this_attempt"], 1
        ),
        "texts_encoded": report["texts_encoded_this_attempt"],
        "rejected": report["invalid_reasons"],
        "cosine_to_positive": report["cosine_to_positive"],
        "changed_attribute_share": {
            name: round(count / changes.height, 4) for name, count in per_name.iter_rows()
        },
        "top_replacement_values": report["top_replacement_values"],
        "max_replacement_share": report["top_replacement_values"][0]["share"],
        "numeric_changes": numeric,
        "numeric_in_another_unit": other_unit,
        "numeric_outside_category_range": outside,
        "items": items.height,
        "share_items_with_4_valid": round(enough / items.height, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "office.yaml")
    parser.add_argument("--root", help="artifact root (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        result = quality(args.config.resolve(), args.root or scratch)
    print(json.dumps(result, indent=2))
    out = HERE / "results" / "negatives_quality.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
