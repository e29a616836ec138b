"""The negatives stage: for every positive item (or user-item pair), N negatives that change its
key features and keep everything else, each checked and kept with its status and reason.

Templates 2 and 3 are answered by the configured backend: the offline generator (`offline.py`)
or a vLLM server (`vllm.py`). With `negatives.controls`, the same generator also writes as many
*control* negatives (kind `control`, their own seed), each changing attributes that are not key
features: the negatives of the `random_intervention` ablation, which asks whether what helps is
the content of the negatives or only their number. The key negatives do not depend on it.

Batches of items become part files, resumable and shardable as in the attributes stage.
`negatives.round` is part of the seed and of the version: a new round is a new artifact beside
the earlier ones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any, Protocol

import polars as pl

from neggen_core import progress
from neggen_core.artifacts.schemas import ATTRIBUTES, DESCRIPTIONS, INTERACTIONS, ITEMS, NEGATIVES
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore, ArtifactWriter
from neggen_core.attributes.stage import item_categories, item_inputs
from neggen_core.config import NeggenConfig
from neggen_core.llm.backend import open_backend
from neggen_core.llm.backend import version_config as backend_version
from neggen_core.llm.models import Attribute
from neggen_core.llm.prompts import COMPLETE, INTERVENE, combined_version
from neggen_core.negatives.offline import OfflineNegatives, Outcome, Positive, as_control
from neggen_core.negatives.vllm import VllmNegatives
from neggen_core.sharding import Stats, still_to_do

SCHEMA_VERSION = 2
GENERATOR_VERSION = 1  # bump when the offline generator's output changes
TABLES = {"negatives": NEGATIVES}
REPORT = "report.json"
KINDS = ("key", "control")  # control: changes attributes that are not key features


def version_config(config: NeggenConfig) -> dict[str, Any]:
    return {
        "negatives": config.negatives.model_dump(),
        "category_level": config.attributes.category_level,
        "prompt_version": combined_version(INTERVENE, COMPLETE),
        "generator_version": GENERATOR_VERSION,
        "llm": backend_version(config),
    }


class Generator(Protocol):
    name: str
    model: str

    def generate(self, units: Sequence[tuple[int | None, Positive]]) -> list[list[Outcome]]: ...


def _positives(
    items: pl.DataFrame, attributes: pl.DataFrame, descriptions: pl.DataFrame, level: int
) -> dict[int, Positive]:
    categories = dict(item_categories(items, level).iter_rows())
    visual = dict(
        descriptions.filter(pl.col("modality") == "image").select("item_idx", "text").iter_rows()
    )
    by_item: dict[int, list[Attribute]] = {}
    for row in attributes.iter_rows(named=True):
        by_item.setdefault(row["item_idx"], []).append(
            Attribute(
                modality=row["modality"], name=row["name"], value=row["value"], is_key=row["is_key"]
            )
        )
    return {
        item.item_idx: Positive(
            item=item,
            category=categories[item.item_idx],
            attributes=tuple(by_item.get(item.item_idx, ())),
            visual_description=visual.get(item.item_idx),
        )
        for item in item_inputs(items)
    }


def _pools(
    attributes: pl.DataFrame, categories: pl.DataFrame
) -> dict[tuple[str, str, str], list[str]]:
    grouped = (
        attributes.join(categories, on="item_idx")
        .group_by("category", "modality", "name")
        .agg(pl.col("value").unique().sort())
    )
    return {(c, m, n): values for c, m, n, values in grouped.iter_rows()}


def _brands(items: pl.DataFrame) -> dict[str, str]:
    """Lower-case brand -> its most common spelling, to write a changed brand as shops do."""
    spelled = (
        items.filter(pl.col("brand").is_not_null())
        .group_by(pl.col("brand").str.to_lowercase().alias("key"), "brand")
        .len()
        .sort("key", "len", "brand", descending=[False, True, False])
        .unique("key", keep="first")
    )
    return dict(spelled.select("key", "brand").iter_rows())


class Job:
    """N negatives for every unit (an item, or a user's train pair), in batches of
    `negatives.batch_size` units."""

    marker = "negatives"

    def __init__(
        self, config: NeggenConfig, store: ArtifactStore, upstream: Mapping[str, ArtifactRef]
    ) -> None:
        self.config = config
        self.store = store
        self.settings = settings = config.negatives
        self.items = store.read_frame(upstream["ingest"], "items", ITEMS)
        self.attributes = store.read_frame(upstream["attributes"], "attributes", ATTRIBUTES)
        descriptions = store.read_frame(upstream["attributes"], "descriptions", DESCRIPTIONS)
        self.positives = _positives(
            self.items, self.attributes, descriptions, config.attributes.category_level
        )
        self.real = {(p.item.text(), p.visual_description) for p in self.positives.values()}
        self.prompt_version = combined_version(INTERVENE, COMPLETE)
        if settings.per_user:
            train = store.read_frame(upstream["ingest"], "interactions", INTERACTIONS)
            pairs = (
                train.filter(pl.col("split") == "train")
                .select("user_idx", "item_idx")
                .sort("user_idx", "item_idx")
            )
            self.units: list[tuple[int | None, int]] = list(pairs.iter_rows())
        else:
            self.units = [(None, idx) for idx in sorted(self.positives)]
        self.batches = -(-len(self.units) // settings.batch_size)

    @cached_property
    def generators(self) -> dict[str, Generator]:
        """The generator of each kind of negative written (key, and control where asked): one
        backend, a seed of each kind's own."""
        settings = self.settings
        kinds = KINDS if settings.controls else KINDS[:1]
        seeds = {
            k: f"{settings.seed}:{settings.round}" + ("" if k == "key" else f":{k}") for k in kinds
        }
        if self.config.llm.backend == "vllm":
            backend = open_backend(self.config, self.store)
            return {
                kind: VllmNegatives(
                    backend, settings.per_item, settings.interventions, settings.image_ratio, seed
                )
                for kind, seed in seeds.items()
            }
        pools = _pools(
            self.attributes, item_categories(self.items, self.config.attributes.category_level)
        )
        brands = _brands(self.items)
        return {
            kind: OfflineNegatives(
                pools=pools,
                brands=brands,
                per_item=settings.per_item,
                interventions=settings.interventions,
                image_ratio=settings.image_ratio,
                seed=seed,
            )
            for kind, seed in seeds.items()
        }

    def build(self, writer: ArtifactWriter, numbers: Sequence[int]) -> Stats:
        todo = still_to_do(writer, self.marker, numbers)
        started = time.perf_counter()
        for done, number in enumerate(todo, 1):
            writer.write_table("negatives", self._batch(number), part=number)
            progress.report("negatives", done, len(todo))
        return {"seconds": time.perf_counter() - started} if todo else {}

    def _batch(self, number: int) -> pl.DataFrame:
        size = self.settings.batch_size
        units = [
            (user_idx, self.positives[item_idx])
            for user_idx, item_idx in self.units[number * size : (number + 1) * size]
        ]
        rows = []
        for kind, generator in self.generators.items():
            asked = units if kind == "key" else [(u, as_control(p)) for u, p in units]
            for (user_idx, positive), outcomes in zip(
                units, generator.generate(asked), strict=True
            ):
                rows += [
                    self._row(kind, generator, user_idx, positive.item.item_idx, j, outcome)
                    for j, outcome in enumerate(outcomes)
                ]
        return pl.DataFrame(rows, schema=pl.Schema(NEGATIVES), orient="row")

    def _row(
        self,
        kind: str,
        generator: Generator,
        user_idx: int | None,
        item_idx: int,
        j: int,
        outcome: Outcome,
    ) -> dict[str, Any]:
        plan, completed, reason = outcome.plan, outcome.completed, outcome.reason
        owner = "" if user_idx is None else f"u{user_idx}-"
        number = str(j) if kind == "key" else f"c{j}"
        return {
            "negative_id": f"r{self.settings.round}-{owner}i{item_idx}-{number}",
            "item_idx": item_idx,
            "user_idx": user_idx,
            "kind": kind,
            "modality": plan.interventions[0].modality,
            "interventions": [i.model_dump() for i in plan.interventions],
            "text": completed.text,
            "visual_description": completed.visual_description,
            "status": "valid" if reason is None else "invalid",
            "reason": reason,
            "possible_false_negative": (completed.text, completed.visual_description) in self.real,
            "round": self.settings.round,
            "backend": f"{generator.name}/{generator.model}",
            "prompt_version": self.prompt_version,
        }

    def finish(self, writer: ArtifactWriter, stats: Stats) -> dict[str, Any]:
        started = time.perf_counter()
        written = writer.read_written("negatives")
        negatives = written.filter(pl.col("kind") == "key")
        report = _report(negatives, self.positives, self.settings.per_item)
        if self.settings.controls:
            flipped = {idx: as_control(p) for idx, p in self.positives.items()}
            controls = written.filter(pl.col("kind") == "control")
            report["controls"] = _report(controls, flipped, self.settings.per_item)
        seconds = stats.get("seconds", 0.0) + time.perf_counter() - started
        writer.write_json(REPORT, {**report, "seconds": round(seconds, 2)})
        return {
            "round": self.settings.round,
            "negatives": negatives.height,
            "valid": report["statuses"].get("valid", 0),
            "share_items_with_enough_valid": report["share_items_with_enough_valid"],
            **({"controls": written.height - negatives.height} if self.settings.controls else {}),
        }


def _report(
    negatives: pl.DataFrame, positives: Mapping[int, Positive], per_item: int
) -> dict[str, Any]:
    """Counts of one kind of negative; `positives` mark the attributes it changes as keys."""
    valid = negatives.filter(pl.col("status") == "valid")
    per_item_valid = valid.group_by("item_idx").agg(pl.len().alias("valid"))
    enough = per_item_valid.filter(pl.col("valid") >= per_item).height
    both = {
        idx
        for idx, p in positives.items()
        if {a.modality for a in p.attributes if a.is_key} == {"text", "image"}
    }
    in_both = negatives.filter(pl.col("item_idx").is_in(list(both)))
    names = negatives.select(
        pl.col("interventions").list.eval(pl.element().struct.field("name"))
    ).explode("interventions")
    return {
        "items": len(positives),
        "negatives": negatives.height,
        "statuses": dict(negatives.group_by("status").len().sort("status").iter_rows()),
        "invalid_reasons": dict(
            negatives.filter(pl.col("status") == "invalid")
            .select(pl.col("reason").str.extract(r"^([^:]+)"))
            .group_by("reason")
            .len()
            .iter_rows()
        ),
        "items_with_enough_valid": enough,
        "share_items_with_enough_valid": round(enough / max(len(positives), 1), 4),
        "items_without_negatives": len(positives) - negatives.get_column("item_idx").n_unique(),
        "valid_per_item": dict(per_item_valid.group_by("valid").len().sort("valid").iter_rows()),
        "per_modality": dict(negatives.group_by("modality").len().sort("modality").iter_rows()),
        "per_attribute": dict(
            names.group_by("interventions").len().sort("len", descending=True).iter_rows()
        ),
        "image_share_where_both_modalities": round(
            in_both.filter(pl.col("modality") == "image").height / max(in_both.height, 1), 4
        ),
        "possible_false_negatives": int(negatives.get_column("possible_false_negative").sum()),
    }
