"""Ingest on the real Amazon Office data (skipped where ../shared/data/amazon-office is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from neggen_core.artifacts.schemas import INTERACTIONS, ITEMS, NEGATIVES, USERS
from neggen_core.config import load_config
from neggen_core.stages import open_store, run_stage
from tests.conftest import OFFICE, REPO
from tests.unit.test_negatives import assert_only_intervened_changed

pytestmark = pytest.mark.skipif(
    not (OFFICE / "Office.inter.json").exists(),
    reason=f"the real Office data is not at {OFFICE} (only in CI and development checkouts)",
)


def test_office_counts_and_exact_split(root: str) -> None:
    config = load_config(REPO / "configs" / "office.yaml", [f"artifacts.root={root}"])
    outcome = run_stage(config, "ingest", {})
    store = open_store(config)
    users = store.read_frame(outcome.ref, "users", USERS)
    items = store.read_frame(outcome.ref, "items", ITEMS)
    interactions = store.read_frame(outcome.ref, "interactions", INTERACTIONS)
    assert (users.height, items.height, interactions.height) == (4905, 2420, 53258)

    raw = json.loads((OFFICE / "Office.inter.json").read_text())
    expected: dict[tuple[str, str], str] = {}
    for user, history in raw.items():
        held = max(1, len(history) // 10)
        for position, item in enumerate(history):
            if position >= len(history) - held:
                expected[(user, str(item))] = "test"
            elif position >= len(history) - 2 * held:
                expected[(user, str(item))] = "valid"
            else:
                expected[(user, str(item))] = "train"
    got = (
        interactions.join(users.select("user_idx", "user_id"), on="user_idx")
        .join(items.select("item_idx", "item_id"), on="item_idx")
        .select("user_id", "item_id", "split")
    )
    assert (
        dict(zip(zip(got["user_id"], got["item_id"], strict=True), got["split"], strict=True))
        == expected
    )
    counts = dict(interactions.group_by("split").len().iter_rows())
    held_total = sum(max(1, len(h) // 10) for h in raw.values())
    assert counts == {"train": 53258 - 2 * held_total, "valid": held_total, "test": held_total}
    # the indices are the dataset's own: user "7" is user_idx 7
    assert users.filter(pl.col("user_idx") == 7).get_column("user_id").item() == "7"
    assert items.get_column("image_uri").null_count() == 2420
    report = store.read_json(outcome.ref, "report.json")
    assert report["items_with_image"] == 0
    assert report["quarantine"]["total"] == 0
    assert (
        items.filter(pl.col("item_id") == "2").get_column("title").item()
        == "AT&T 210 Corded Phone, Black, 1 Handset"
    )

    assert run_stage(config, "ingest", {}).skipped
    stricter = load_config(
        REPO / "configs" / "office.yaml", [f"artifacts.root={root}", "ingest.k_core=10"]
    )
    tenfold = run_stage(stricter, "ingest", {})
    assert tenfold.ref.version != outcome.ref.version
    assert store.exists("ingest", outcome.ref.version)
    assert store.manifest("ingest", tenfold.ref.version).tables["users"].rows < 4905


@pytest.fixture(scope="module")
def office_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One artifact root for the attributes and negatives tests (attributes take ~1 min)."""
    return str(tmp_path_factory.mktemp("office-artifacts"))


def test_office_attributes_offline(office_root: str) -> None:
    config = load_config(REPO / "configs" / "office.yaml", [f"artifacts.root={office_root}"])
    ingest = run_stage(config, "ingest", {}).ref
    outcome = run_stage(config, "attributes", {"ingest": ingest})
    store = open_store(config)
    report = store.read_json(outcome.ref, "report.json")
    assert report["items"] == 2420 and report["items_covered"] == 2420
    assert report["share_with_key_attribute"] >= 0.95, report["share_with_key_attribute"]
    assert report["items_with_image"] == 0
    assert set(report["attributes_per_modality"]) == {"text"}
    manifest = store.manifest("attributes", outcome.ref.version)
    assert manifest.upstream == {"ingest": ingest.version}

    files = {p: p.stat().st_mtime_ns for p in Path(outcome.ref.uri).rglob("*") if p.is_file()}
    again = run_stage(config, "attributes", {"ingest": ingest})
    assert again.skipped and again.ref == outcome.ref
    assert {
        p: p.stat().st_mtime_ns for p in Path(outcome.ref.uri).rglob("*") if p.is_file()
    } == files


def test_office_negatives_offline(office_root: str) -> None:
    config = load_config(REPO / "configs" / "office.yaml", [f"artifacts.root={office_root}"])
    ingest = run_stage(config, "ingest", {}).ref
    attributes = run_stage(config, "attributes", {"ingest": ingest}).ref
    outcome = run_stage(config, "negatives", {"ingest": ingest, "attributes": attributes})
    store = open_store(config)
    report = store.read_json(outcome.ref, "report.json")
    assert report["share_items_with_enough_valid"] >= 0.90, report["share_items_with_enough_valid"]
    negatives = store.read_frame(outcome.ref, "negatives", NEGATIVES)
    assert negatives.get_column("negative_id").is_unique().all()
    invalid = negatives.filter(pl.col("status") == "invalid")
    assert invalid.get_column("reason").null_count() == 0
    checked = assert_only_intervened_changed(store, ingest, negatives)
    assert checked == negatives.height - invalid.height > 0.9 * 4 * 2420
