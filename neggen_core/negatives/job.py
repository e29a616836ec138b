"""The negatives stage: for every positive item (or user-item pair), N negatives that change its
key features and keep everything else, each checked and kept with its status and reason.

Templates 2 and 3 are answered by the configured backend: the lexicon generator (`lexicon.py`)
or a vLLM server (`vllm.py`). With `negatives.controls`, the same generator also writes as many
*control* negatives (kind `control`, their own seed), each changing attributes that are not key
features: the negatives of the `random_intervention` ablation, which asks whether what helps is
the content of the negatives or only their number. The key negatives do not depend on it.

Batches of items become part files, resumable and shardable as in the attributes stage.
`negatives.round` is part of the seed and of the version: a new round is a new artifact beside
the earlier ones. This module is the stage's I/O; its logic on frames is in `compute.py`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from neggen_core import progress
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.attributes.contract import (
    item_categories,
    read_attributes,
    read_descriptions,
    read_key_features,
)
from neggen_core.categories import category_lineage
from neggen_core.config import NeggenConfig
from neggen_core.encoders.cached import stacked_vectors
from neggen_core.encoders.text import TextEncoder
from neggen_core.ingest.contract import read_interactions, read_items
from neggen_core.llm.backend import open_vllm, uses_vllm
from neggen_core.llm.prompts import COMPLETE, INTERVENE, combined_version
from neggen_core.llm.vllm import VllmBackend
from neggen_core.negatives import compute
from neggen_core.negatives.contract import REPORT, SCHEMA_VERSION, TABLES, UPSTREAM, version_config
from neggen_core.negatives.lexicon import LexiconNegatives
from neggen_core.negatives.models import Generator, Outcome, Positive
from neggen_core.negatives.screen import measured_rows, screen
from neggen_core.negatives.vllm import VllmNegatives
from neggen_core.pipeline.spec import StageSpec
from neggen_core.sharding import Stats, counted, still_to_do

LLM = "llm_"  # the prefix of the vLLM backend's counters among a build's stats


class NegativesJob:
    """N negatives for every unit (an item, or a user's train pair), in batches of
    `negatives.batch_size` units."""

    marker = "negatives"

    def __init__(
        self, config: NeggenConfig, store: ArtifactStore, upstream: Mapping[str, ArtifactRef]
    ) -> None:
        self.config = config
        self.store = store
        self.settings = settings = config.negatives
        self.items = read_items(store, upstream["ingest"])
        self.upstream = dict(upstream)
        self.attributes = read_attributes(store, upstream["attributes"])
        descriptions = read_descriptions(store, upstream["attributes"])
        self.positives = compute.positives_of(
            self.items, self.attributes, descriptions, config.attributes.category_level
        )
        self.rows = compute.Rows.of(settings, combined_version(INTERVENE, COMPLETE), self.positives)
        self.train = read_interactions(store, upstream["ingest"], split="train")
        self.units = compute.units(self.positives, self.train if settings.per_user else None)
        self.batches = -(-len(self.units) // settings.batch_size)
        self.encoding = {"encode_seconds": 0.0, "texts_encoded": 0}
        self.known: dict[str, np.ndarray] = {}
        self.vllm: VllmBackend | None = None  # once the generators are made, with vLLM

    @cached_property
    def generators(self) -> dict[str, Generator]:
        """The generator of each kind of negative written (key, and control where asked): one
        backend, a seed of each kind's own."""
        settings = self.settings
        seeds = compute.seeds(settings)
        if uses_vllm(self.config):
            self.vllm = backend = open_vllm(self.config, self.store)
            return {
                kind: VllmNegatives(
                    backend, self.candidates, settings.interventions, settings.image_ratio, seed
                )
                for kind, seed in seeds.items()
            }
        level = self.config.attributes.category_level
        categories = item_categories(self.items, level)
        pools = compute.pools(self.attributes, categories, category_lineage(self.items, level))
        brands = compute.brands(self.items)
        chosen = compute.buyer_values(self.attributes, self.train)
        return {
            kind: LexiconNegatives(
                pools=pools,
                brands=brands,
                per_item=self.candidates,
                interventions=settings.interventions,
                image_ratio=settings.image_ratio,
                seed=seed,
                chosen=chosen,
            )
            for kind, seed in seeds.items()
        }

    @property
    def candidates(self) -> int:
        """Candidates a generator writes per unit: the negatives wanted and the spares."""
        return self.settings.per_item + self.settings.spare

    @cached_property
    def encoder(self) -> TextEncoder | None:
        """The embeddings stage's encoder, where near-copies are checked."""
        if self.settings.max_cosine is None:
            return None
        settings = self.config.embeddings
        return TextEncoder(
            settings.encoder, settings.encode_batch_size, settings.encoder_backend, settings.device
        )

    def similarity(self, pairs: Sequence[tuple[Positive, Outcome]]) -> np.ndarray:
        """The cosine of each candidate's stacked modalities to its positive's (with the
        attributes modality where `embeddings.attribute_text`, as the embeddings stage embeds
        them)."""
        assert self.encoder is not None
        # a control unit's positive is its control view, key flags swapped: measure the real one
        real = [(self.positives[p.item.item_idx], outcome) for p, outcome in pairs]
        rows = measured_rows(real, self.config.embeddings.attribute_text)
        began = time.perf_counter()
        vectors, encoded = stacked_vectors(self.encoder, rows, self.known)
        self.encoding["encode_seconds"] += time.perf_counter() - began
        self.encoding["texts_encoded"] += encoded
        positives, negatives = vectors[: len(pairs)], vectors[len(pairs) :]
        cosines: np.ndarray = (positives * negatives).sum(axis=1)
        return cosines

    def _llm_stats(self) -> dict[str, Any]:
        return self.vllm.stats() if self.vllm is not None else {}

    def build(self, writer: ArtifactWriter, numbers: Sequence[int]) -> Stats:
        todo = still_to_do(writer, self.marker, numbers)
        started, before = time.perf_counter(), self._llm_stats()
        for done, number in enumerate(todo, 1):
            writer.write_table("negatives", self._batch(number), part=number)
            progress.report("negatives", done, len(todo))
        if not todo:
            return {}
        llm = {LLM + key: value for key, value in counted(before, self._llm_stats()).items()}
        return {"seconds": time.perf_counter() - started, **self.encoding, **llm}

    def _batch(self, number: int) -> pl.DataFrame:
        size = self.settings.batch_size
        batch = [
            (user_idx, self.positives[item_idx])
            for user_idx, item_idx in self.units[number * size : (number + 1) * size]
        ]
        check = self.similarity if self.encoder is not None else None
        self.known = {}  # the batch's texts, encoded within the batch: see stacked_vectors
        rows = []
        for kind, generator in self.generators.items():
            units = compute.asked(kind, batch)
            examined = screen(
                units, generator, self.settings.per_item, check, self.settings.max_cosine
            )
            backend = f"{generator.name}/{generator.model}"
            rows += self.rows.of_kind(kind, backend, batch, examined)
        return compute.negatives_frame(rows)

    def finish(self, writer: ArtifactWriter, stats: Stats) -> dict[str, Any]:
        started = time.perf_counter()
        written = writer.read_written("negatives")
        keys = read_key_features(self.store, self.upstream["attributes"])
        report = compute.stage_report(written, self.positives, self.settings, keys)
        seconds = stats.get("seconds", 0.0) + time.perf_counter() - started
        encoding = {
            "encode_seconds_this_attempt": round(stats.get("encode_seconds", 0.0), 2),
            "texts_encoded_this_attempt": int(stats.get("texts_encoded", 0)),
        }
        if uses_vllm(self.config):  # this attempt's requests, finish reasons, retries, tokens
            report["llm"] = {
                key.removeprefix(LLM): value for key, value in stats.items() if key.startswith(LLM)
            }
        writer.write_json(REPORT, {**report, **encoding, "seconds": round(seconds, 2)})
        return compute.summary(report, self.settings)


SPEC = StageSpec("negatives", UPSTREAM, SCHEMA_VERSION, TABLES, version_config, job=NegativesJob)
