"""The negatives stage's logic on frames: the positives and their units, the value pools and
brand spellings the lexicon generator draws from, each kind's seed, the rows written for
generated outcomes, and the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import polars as pl

from neggen_core.artifacts.schemas import NEGATIVES
from neggen_core.attributes.contract import item_categories, item_inputs
from neggen_core.categories import Lineage
from neggen_core.config import NegativesConfig
from neggen_core.llm.models import Attribute
from neggen_core.negatives.contract import KINDS
from neggen_core.negatives.lexicon import NUMBER
from neggen_core.negatives.models import Positive, Unit, as_control
from neggen_core.negatives.screen import Examined

POOL_MINIMUM = 5  # values an attribute's pool should offer before it borrows (4 to change to)


def positives_of(
    items: pl.DataFrame, attributes: pl.DataFrame, descriptions: pl.DataFrame, level: int
) -> dict[int, Positive]:
    """item_idx -> the item as a positive: its category at `level`, its attributes (in table
    order) and the visual description of its image (or None)."""
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


def units(
    positives: Mapping[int, Positive], train: pl.DataFrame | None
) -> list[tuple[int | None, int]]:
    """(user_idx, item_idx) of every unit: each train pair, by user then item, given `train`
    (its interactions); each item (user None) by item_idx without."""
    if train is None:
        return [(None, idx) for idx in sorted(positives)]
    return list(train.select("user_idx", "item_idx").sort("user_idx", "item_idx").iter_rows())


def _counted(
    attributes: pl.DataFrame, categories: pl.DataFrame
) -> dict[tuple[str, str, str], dict[str, int]]:
    """(category, modality, name) -> value -> how many of the category's items have it."""
    counted = (
        attributes.join(categories, on="item_idx")
        .group_by("category", "modality", "name", "value")
        .agg(pl.col("item_idx").n_unique().alias("items"))
        .sort("category", "modality", "name", "value")
    )
    found: dict[tuple[str, str, str], dict[str, int]] = {}
    for category, modality, name, value, items in counted.iter_rows():
        found.setdefault((category, modality, name), {})[value] = items
    return found


def _quantity(name: str, value: str) -> tuple[float, str] | None:
    """(number, unit) of a numeric value ("" for a bare number), None for any other."""
    match = NUMBER.fullmatch(value.strip().lower()) if name != "brand" else None
    return None if match is None else (float(match.group(1)), (match.group(2) or "").strip())


def _in_range(name: str, own: Mapping[str, int], lent: Mapping[str, int]) -> dict[str, int]:
    """`lent` without the numbers outside the range `own` spans in their unit (and without
    numbers in a unit `own` has none in): a borrowed number stays in the category's range."""
    spans: dict[str, tuple[float, float]] = {}
    for value in own:
        parsed = _quantity(name, value)
        if parsed is not None:
            low, high = spans.get(parsed[1], (parsed[0], parsed[0]))
            spans[parsed[1]] = (min(low, parsed[0]), max(high, parsed[0]))
    kept = {}
    for value, items in lent.items():
        parsed = _quantity(name, value)
        span = None if parsed is None else spans.get(parsed[1])
        if parsed is None or (span is not None and span[0] <= parsed[0] <= span[1]):
            kept[value] = items
    return kept


def pools(
    attributes: pl.DataFrame,
    categories: pl.DataFrame,
    lineage: Lineage | None = None,
    minimum: int = POOL_MINIMUM,
) -> dict[tuple[str, str, str], dict[str, int]]:
    """(category, modality, name) -> each value the category's items have, by value, with how
    many of its items have it. Given the categories' `lineage`, an attribute with fewer than
    `minimum` values in its category takes the values of the nearest donor group that has
    `minimum` of them (else of the one with the most), counted over that group's items, a
    number only inside the category's own range in its unit."""
    found = _counted(attributes, categories)
    if lineage is None:
        return found
    lent = _counted(attributes, lineage.members.rename({"group": "category"}))
    for (category, modality, name), own in found.items():
        if len(own) >= minimum:
            continue
        best = own
        for donor in lineage.donors.get(category, ()):
            pool = _in_range(name, own, lent.get((donor.group, modality, name), {}))
            if len(pool) > len(best):
                best = pool
            if len(best) >= minimum:
                break
        found[(category, modality, name)] = best
    return found


def buyer_values(
    attributes: pl.DataFrame, train: pl.DataFrame
) -> dict[int, dict[tuple[str, str], frozenset[str]]]:
    """item_idx -> (modality, name) -> the values of that attribute on every item the item's
    buyers bought in train: what those users did choose, which a negative should not offer."""
    bought = train.select("user_idx", "item_idx")
    chosen = (
        bought.join(bought.rename({"item_idx": "other"}), on="user_idx")
        .select("item_idx", "other")
        .unique()
        .join(
            attributes.select(pl.col("item_idx").alias("other"), "modality", "name", "value"),
            on="other",
        )
        .group_by("item_idx", "modality", "name")
        .agg(pl.col("value").unique())
    )
    found: dict[int, dict[tuple[str, str], frozenset[str]]] = {}
    for item_idx, modality, name, values in chosen.iter_rows():
        found.setdefault(item_idx, {})[(modality, name)] = frozenset(values)
    return found


def brands(items: pl.DataFrame) -> dict[str, str]:
    """Lower-case brand -> its most common spelling, to write a changed brand as shops do."""
    spelled = (
        items.filter(pl.col("brand").is_not_null())
        .group_by(pl.col("brand").str.to_lowercase().alias("key"), "brand")
        .len()
        .sort("key", "len", "brand", descending=[False, True, False])
        .unique("key", keep="first")
    )
    return dict(spelled.select("key", "brand").iter_rows())


def seeds(settings: NegativesConfig) -> dict[str, str]:
    """The seed of each kind of negative written: key, and control where asked."""
    kinds = KINDS if settings.controls else KINDS[:1]
    base = f"{settings.seed}:{settings.round}"
    return {kind: base + ("" if kind == "key" else f":{kind}") for kind in kinds}


def asked(kind: str, batch: Sequence[Unit]) -> list[Unit]:
    """The units as the generator of `kind` is given them (controls flip which are keys)."""
    return list(batch) if kind == "key" else [(u, as_control(p)) for u, p in batch]


@dataclass(frozen=True)
class Rows:
    """What the negative rows of a run share: its round, the prompt version, and the (text,
    visual description) of every real item, which a negative equal to one is flagged against."""

    round: int
    prompt_version: str
    real: frozenset[tuple[str, str | None]]

    @classmethod
    def of(
        cls, settings: NegativesConfig, prompt_version: str, positives: Mapping[int, Positive]
    ) -> Rows:
        real = frozenset((p.item.text(), p.visual_description) for p in positives.values())
        return cls(settings.round, prompt_version, real)

    def row(
        self, kind: str, backend: str, user_idx: int | None, item_idx: int, examined: Examined
    ) -> dict[str, Any]:
        """The `negatives` row of one examined candidate of a unit."""
        outcome, j = examined.outcome, examined.number
        plan, completed, reason = outcome.plan, outcome.completed, outcome.reason
        owner = "" if user_idx is None else f"u{user_idx}-"
        number = str(j) if kind == "key" else f"c{j}"
        return {
            "negative_id": f"r{self.round}-{owner}i{item_idx}-{number}",
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
            "cosine_to_positive": examined.cosine,
            "round": self.round,
            "backend": backend,
            "prompt_version": self.prompt_version,
        }

    def of_kind(
        self,
        kind: str,
        backend: str,
        batch: Sequence[Unit],
        examined: Sequence[Sequence[Examined]],
    ) -> list[dict[str, Any]]:
        """The rows of one kind's examined candidates for a batch of units, unit by unit."""
        return [
            self.row(kind, backend, user_idx, positive.item.item_idx, candidate)
            for (user_idx, positive), candidates in zip(batch, examined, strict=True)
            for candidate in candidates
        ]


def negatives_frame(rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows as a `negatives` table part."""
    return pl.DataFrame(rows, schema=pl.Schema(NEGATIVES), orient="row")


def report(
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
        "cosine_to_positive": cosine_histogram(negatives),
        **replacements(valid),
    }


COSINE_EDGES = (0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.999)


def cosine_histogram(negatives: pl.DataFrame) -> dict[str, Any]:
    """How close the measured negatives are to their positives: counts of the valid ones and of
    those rejected as near-copies per cosine bin, and the valid ones' share at 0.99 or above."""
    measured = negatives.filter(pl.col("cosine_to_positive").is_not_null())
    labels = [f"<{COSINE_EDGES[0]}"]
    labels += [f"{a}-{b}" for a, b in pairwise(COSINE_EDGES)]
    labels += [f">={COSINE_EDGES[-1]}"]
    # left-closed bins: [0.8, 0.9) is the bin of 0.8
    index = np.searchsorted(COSINE_EDGES, measured["cosine_to_positive"].to_numpy(), "right")
    binned = measured.with_columns(pl.Series("bin", [labels[i] for i in index], pl.String))

    def counts(frame: pl.DataFrame) -> dict[str, int]:
        found = dict(frame.group_by("bin").len().iter_rows())
        return {label: int(found.get(label, 0)) for label in labels}

    valid = binned.filter(pl.col("status") == "valid")
    high = valid.filter(pl.col("cosine_to_positive") >= 0.99).height
    return {
        "measured": measured.height,
        "valid": counts(valid),
        "rejected_near_copies": counts(binned.filter(pl.col("status") != "valid")),
        "valid_share_at_or_above_0.99": round(high / max(valid.height, 1), 4),
        "valid_median": round(valid.select(pl.col("cosine_to_positive").median()).item(), 4)
        if valid.height
        else None,
    }


def replacements(valid: pl.DataFrame, top: int = 10, examples: int = 3) -> dict[str, Any]:
    """Which values replace the changed attributes of `valid` negatives: the `top` most frequent
    (their share of the negatives; none should dominate) and, per attribute, the first
    `examples` negatives (by id) with the change they make."""
    changes = (
        valid.select("negative_id", "text", "interventions")
        .explode("interventions")
        .unnest("interventions")
        .drop_nulls("name")
    )
    frequent = (
        changes.group_by("name", "to_value")
        .len()
        .sort(["len", "name", "to_value"], descending=[True, False, False])
        .head(top)
    )
    shown = (
        changes.sort("negative_id")
        .group_by("name", maintain_order=True)
        .head(examples)
        .sort("name", "negative_id")
    )
    return {
        "top_replacement_values": [
            {"name": n, "value": v, "negatives": c, "share": round(c / max(valid.height, 1), 4)}
            for n, v, c in frequent.iter_rows()
        ],
        "examples": {
            name: [
                {"negative_id": i, "change": f"{f} -> {t}", "text": x}
                for i, f, t, x in group.select(
                    "negative_id", "from_value", "to_value", "text"
                ).iter_rows()
            ]
            for (name,), group in shown.group_by("name", maintain_order=True)
        },
    }


def key_lift(
    valid: pl.DataFrame, positives: Mapping[int, Positive], keys: pl.DataFrame
) -> dict[str, Any]:
    """Per intervened key attribute of the `valid` negatives: how many change it, their share,
    and the mean lift (and sources) of that key in the positives' categories (`keys`: the
    attributes stage's key features)."""
    categories = pl.DataFrame(
        [(idx, p.category) for idx, p in positives.items()],
        schema={"item_idx": pl.Int32, "category": pl.String},
        orient="row",
    )
    changes = (
        valid.select("item_idx", "interventions")
        .explode("interventions")
        .unnest("interventions")
        .drop_nulls("name")
        .join(categories, on="item_idx")
        .join(
            keys.select("category", "modality", "name", "lift", "source"),
            on=["category", "modality", "name"],
            how="left",
        )
        .with_columns(pl.col("source").str.extract(r"^([a-z]+)"))
    )
    summary = (
        changes.group_by("modality", "name")
        .agg(
            pl.len().alias("negatives"),
            pl.col("lift").mean().round(4).alias("mean_lift"),
            pl.col("source").drop_nulls().unique().sort().alias("sources"),
        )
        .sort(["negatives", "modality", "name"], descending=[True, False, False])
    )
    return {
        f"{m}:{n}": {
            "negatives": count,
            "share": round(count / max(changes.height, 1), 4),
            "mean_lift": lift,
            "sources": sources,
        }
        for m, n, count, lift, sources in summary.iter_rows()
    }


def stage_report(
    written: pl.DataFrame,
    positives: Mapping[int, Positive],
    settings: NegativesConfig,
    keys: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """The report of the key negatives, with the controls' (against the flipped positives)
    under `controls` where they are written; given the key features, the lift of each key the
    negatives change."""
    key = written.filter(pl.col("kind") == "key")
    result = report(key, positives, settings.per_item)
    if keys is not None:
        result["intervened_keys"] = key_lift(
            key.filter(pl.col("status") == "valid"), positives, keys
        )
    if settings.controls:
        flipped = {idx: as_control(p) for idx, p in positives.items()}
        controls = written.filter(pl.col("kind") == "control")
        result["controls"] = report(controls, flipped, settings.per_item)
    return result


def summary(full: Mapping[str, Any], settings: NegativesConfig) -> dict[str, Any]:
    """The stage's summary line, from its `stage_report`."""
    return {
        "round": settings.round,
        "negatives": full["negatives"],
        "valid": full["statuses"].get("valid", 0),
        "share_items_with_enough_valid": full["share_items_with_enough_valid"],
        **({"controls": full["controls"]["negatives"]} if settings.controls else {}),
    }
