"""Assertions shared by the unit tests and the integration test on the real Office data.

tests/conftest.py registers this package for pytest's assertion rewriting, so that a failing
`assert` here explains itself as one in a test module does."""

from __future__ import annotations

import numpy as np
import polars as pl

from neggen_core.artifacts.schemas import ITEMS
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.llm.lexicon_backend import parse_image_description, read_text
from neggen_core.llm.models import ItemInput


def assert_same_vectors(stored: np.ndarray, direct: np.ndarray, backend: str) -> None:
    """Equal to the encoder's precision: torch float32 to 1e-5 whatever the batch; OpenVINO
    runs in bf16 on this CPU (its default where AMX is), where the padding of the batch a text
    was encoded in moves its vector by up to ~1e-3 per entry, a cosine distance under 1e-4."""
    if backend == "torch":
        np.testing.assert_allclose(stored, direct, atol=1e-5)
    else:
        assert 1 - (stored * direct).sum(axis=1).min() <= 1e-4


def assert_only_intervened_changed(
    store: ArtifactStore, ingest: ArtifactRef, negatives: pl.DataFrame
) -> int:
    """Every valid negative, read back from its text and visual description, has its
    positive's attributes except exactly the intervened ones, which differ."""
    items = {
        r["item_idx"]: r for r in store.read_frame(ingest, "items", ITEMS).iter_rows(named=True)
    }
    checked = 0
    for row in negatives.filter(pl.col("status") == "valid").iter_rows(named=True):
        item = items[row["item_idx"]]
        positive = ItemInput(
            item_idx=item["item_idx"],
            title=item["title"],
            description=item["description"],
            brand=item["brand"],
            categories=tuple(item["categories"]),
            image_uri=None,
        )
        negative = ItemInput.from_text(row["item_idx"], row["text"])
        before = {a.name: a.value for a in read_text(positive)}
        after = {a.name: a.value for a in read_text(negative)}
        changes = [c for c in row["interventions"] if c["modality"] == "text"]
        expected = before | {c["name"]: c["to_value"] for c in changes}
        assert after == expected, (row["negative_id"], before, after, changes)
        for change in changes:
            assert change["from_value"] == before[change["name"]] != change["to_value"]
        image_changes = [c for c in row["interventions"] if c["modality"] == "image"]
        if image_changes:
            seen = parse_image_description(row["visual_description"])
            for change in image_changes:
                assert seen[change["name"]] == change["to_value"] != change["from_value"]
        checked += 1
    return checked
