"""What the negatives stage promises: its table, what its version depends on, its reader."""

from __future__ import annotations

from typing import Any

import polars as pl

from neggen_core.artifacts.schemas import NEGATIVES
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.config import NeggenConfig
from neggen_core.encoders.cached import ATTRIBUTE_TEXT_VERSION
from neggen_core.encoders.text import model_fingerprint
from neggen_core.llm.backend import version_config as backend_version
from neggen_core.llm.prompts import COMPLETE, INTERVENE, combined_version

UPSTREAM = ("ingest", "attributes")
SCHEMA_VERSION = 3  # 3: cosine_to_positive
LEXICON_GENERATOR_VERSION = 4  # bump when the lexicon generator's output changes
TABLES = {"negatives": NEGATIVES}
REPORT = "report.json"
KINDS = ("key", "control")  # control: changes attributes that are not key features


def version_config(config: NeggenConfig) -> dict[str, Any]:
    """What the negatives depend on; where near-copies are checked, the encoder that measures
    them (its weights and backend, as in the embeddings version) and whether the attributes
    modality is part of what it measures (then which attribute text)."""
    embeddings = config.embeddings
    measured = config.negatives.max_cosine is not None
    encoder = [model_fingerprint(embeddings.encoder), embeddings.encoder_backend]
    return {
        "negatives": config.negatives.model_dump(),
        "encoder": [*encoder, embeddings.attribute_text and ATTRIBUTE_TEXT_VERSION]
        if measured
        else None,
        "category_level": config.attributes.category_level,
        "prompt_version": combined_version(INTERVENE, COMPLETE),
        "generator_version": LEXICON_GENERATOR_VERSION,
        "llm": backend_version(config, negatives=True),
    }


def read_negatives(store: ArtifactStore, ref: ArtifactRef) -> pl.DataFrame:
    """The `negatives` table: every generated negative, valid or not."""
    return store.read_frame(ref, "negatives", NEGATIVES)
