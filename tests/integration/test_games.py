"""Ingest on the real Amazon Video Games data, the scale case (skipped where
../shared/data/amazon-games is absent); `bench/scale.py` runs the whole pipeline on it."""

from __future__ import annotations

import json

import polars as pl
import pytest

from neggen_core.artifacts.schemas import INTERACTIONS, ITEMS
from neggen_core.config import load_config
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store
from tests.support.helpers import GAMES, REPO

pytestmark = pytest.mark.skipif(
    not (GAMES / "Games.inter.json").exists(),
    reason=f"the real Games data is not at {GAMES} (only in CI and development checkouts)",
)


def test_games_counts_repeats_and_clean_categories(root: str) -> None:
    """The 5-core the data's README measured, its 121 repeated pairs dropped (the earliest
    kept), Office's split rule, and no HTML entity left in a category ("Retro Gaming &amp;
    Microconsoles" is one category with "Retro Gaming & Microconsoles")."""
    config = load_config(REPO / "configs" / "games.yaml", [f"artifacts.root={root}"])
    ref = run_stage(config, "ingest", {}).ref
    store = open_store(config)
    report = store.read_json(ref, "report.json")
    assert (report["users"], report["items"], report["interactions"]) == (21223, 8189, 167861)
    steps = {step["step"]: step for step in report["steps"]}
    assert steps["duplicates"]["dropped"] == 121
    assert report["records_read"] == 205301 and report["quarantine"]["total"] == 0

    interactions = store.read_frame(ref, "interactions", INTERACTIONS)
    per_user = interactions.group_by("user_idx").agg(
        pl.len().alias("n"), (pl.col("split") == "test").sum().alias("test")
    )
    assert (per_user["test"] == (per_user["n"] // 10).clip(lower_bound=1)).all()

    categories = store.read_frame(ref, "items", ITEMS)["categories"].explode().drop_nulls()
    assert not categories.str.contains("&amp;", literal=True).any()
    assert categories.str.contains("Retro Gaming & Microconsoles", literal=True).any()
    raw = json.loads((GAMES / "Games.item.json").read_text())
    assert any("&amp;" in item["categories"] for item in raw.values())  # the raw data has them
