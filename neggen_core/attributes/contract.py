"""What the attributes stage promises: its tables, what its version depends on, and the readers
the stages downstream use (descriptions, attributes), and the two views of ingest's items that
every stage after it shares (`item_inputs`, the item as the templates see it; `item_categories`,
the category that groups it for key features)."""

from __future__ import annotations

from typing import Any

import polars as pl

from neggen_core.artifacts.schemas import (
    ATTRIBUTES,
    DESCRIPTIONS,
    KEY_FEATURES,
)
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.categories import UNCATEGORISED as UNCATEGORISED
from neggen_core.categories import item_categories as item_categories
from neggen_core.config import NeggenConfig
from neggen_core.llm.backend import version_config as backend_version
from neggen_core.llm.models import ItemInput
from neggen_core.llm.prompts import DESCRIBE_EXTRACT, load_template

UPSTREAM = ("ingest",)
SCHEMA_VERSION = 2  # 2: key_features support and source
TABLES = {"attributes": ATTRIBUTES, "descriptions": DESCRIPTIONS, "key_features": KEY_FEATURES}
REPORT = "report.json"


def version_config(config: NeggenConfig) -> dict[str, Any]:
    """What the attributes version depends on (not concurrency, timeouts or the API key)."""
    return {
        "llm": backend_version(config),
        "attributes": config.attributes.model_dump(),
        "prompt_version": load_template(DESCRIBE_EXTRACT).version,
    }


def item_inputs(items: pl.DataFrame) -> list[ItemInput]:
    return [
        ItemInput(
            item_idx=row["item_idx"],
            title=row["title"],
            description=row["description"],
            brand=row["brand"],
            categories=tuple(row["categories"]),
            image_uri=row["image_uri"],
        )
        for row in items.sort("item_idx").iter_rows(named=True)
    ]


def read_descriptions(store: ArtifactStore, ref: ArtifactRef) -> pl.DataFrame:
    """The `descriptions` table: per item and modality, the text or visual description."""
    return store.read_frame(ref, "descriptions", DESCRIPTIONS)


def read_attributes(store: ArtifactStore, ref: ArtifactRef) -> pl.DataFrame:
    """The `attributes` table, `is_key` set."""
    return store.read_frame(ref, "attributes", ATTRIBUTES)


def read_key_features(store: ArtifactStore, ref: ArtifactRef) -> pl.DataFrame:
    """The `key_features` table: per category, its key attributes with their lift and source."""
    return store.read_frame(ref, "key_features", KEY_FEATURES)
