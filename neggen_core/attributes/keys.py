"""Key features per category: the attributes whose values best separate what users choose.

For a group of items (a category, or a group it borrows from) and an attribute (modality +
name), take the users' train interactions with the group's items that have the attribute. If
users pick by that attribute, each user's items concentrate on few values: the mean share of a
user's most frequent value is high. Chance also concentrates values (an attribute with two
values looks concentrated), so the lift is that statistic minus the same statistic with the
interactions handed to users at random (a seeded shuffle). Its support: the users with two or
more such interactions, and those interactions. Only the train split is used, never valid or
test.

An attribute's lift is measured in the category itself where it has the support (at least
`MIN_USERS` users and `MIN_SUPPORT` interactions); with too little data there it is borrowed
from the nearest group of the category's lineage that has it (`lineage.py`: its parents in the
category tree, or its nearest categories by text, then every item), and the key-features row
says which (`source`: `own`, `parent:<name>`, `similar:<names>`, `global`).
"""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl

from neggen_core.categories import Donor

# the support a lift must be measured on (users, and their interactions): a real key's lift is
# 0.05-0.3 on Office, and thinner evidence let noise pick the keys of fine categories (single
# names in tests/support/catalogues.py, seeds 1, 2, 4, 5: 84-95% of items with 4 valid
# negatives at 20 users / 50 interactions, 90-98% at 30 / 80)
MIN_USERS = 30
MIN_SUPPORT = 80
DIGITS = 9
OWN = "own"
KEYED = ["category", "modality", "name"]
KEY_COLUMNS = (
    "category",
    "modality",
    "name",
    "rank",
    "lift",
    "coverage",
    "score",
    "users",
    "support",
    "source",
)


def _concentration(frame: pl.DataFrame, user: str) -> pl.DataFrame:
    return (
        frame.group_by("category", "attribute", user, "value")
        .len()
        .group_by("category", "attribute", user)
        .agg(
            (pl.col("len").max() / pl.col("len").sum()).alias("share"),
            pl.col("len").sum().alias("n"),
        )
        .filter(pl.col("n") >= 2)
        .group_by("category", "attribute")
        .agg(pl.col("share").mean(), pl.len().alias("users"), pl.col("n").sum().alias("support"))
    )


def score_attributes(
    attributes: pl.DataFrame, item_category: pl.DataFrame, train: pl.DataFrame, seed: int = 0
) -> pl.DataFrame:
    """(category, modality, name, lift, coverage, score, users, support) for every attribute
    seen; score = lift (at least 0) x coverage.

    `attributes`: item_idx, modality, name, value; `item_category`: item_idx, category (an item
    may be in several groups, once each); `train`: user_idx, item_idx (train split only)."""
    tagged = attributes.join(item_category, on="item_idx").with_columns(
        pl.concat_str("modality", "name", separator=":").alias("attribute")
    )
    items_per_category = item_category.group_by("category").agg(pl.len().alias("items"))
    coverage = (
        tagged.group_by("category", "attribute", "modality", "name")
        .agg(pl.col("item_idx").n_unique().alias("with_attribute"))
        .join(items_per_category, on="category")
        .with_columns((pl.col("with_attribute") / pl.col("items")).alias("coverage"))
    )
    events = train.join(tagged, on="item_idx").sort("category", "attribute", "user_idx", "item_idx")
    shuffled = events.with_columns(
        pl.col("user_idx").shuffle(seed=seed).over("category", "attribute").alias("random_user")
    )
    real = _concentration(events, "user_idx")
    chance = _concentration(shuffled, "random_user").select(
        "category", "attribute", pl.col("share").alias("chance")
    )
    return (
        coverage.join(real, on=["category", "attribute"], how="left")
        .join(chance, on=["category", "attribute"], how="left")
        .with_columns(
            # rounded: a parallel mean's last bits depend on summation order, and a rerun must
            # choose, and write, exactly the same
            (pl.col("share") - pl.col("chance")).fill_null(0.0).round(DIGITS).alias("lift"),
            pl.col("coverage").round(DIGITS),
            pl.col("users").fill_null(0).cast(pl.Int64),
            pl.col("support").fill_null(0).cast(pl.Int64),
        )
        .with_columns(
            (pl.col("lift").clip(lower_bound=0) * pl.col("coverage")).round(DIGITS).alias("score")
        )
        .select("category", "modality", "name", "lift", "coverage", "score", "users", "support")
        .sort("category", "score", "modality", "name", descending=[False, True, False, False])
    )


def evidence(
    scores: pl.DataFrame,
    borrowed: pl.DataFrame | None = None,
    donors: Mapping[str, tuple[Donor, ...]] | None = None,
) -> pl.DataFrame:
    """(category, modality, name, coverage, lift, users, support, source): for every attribute
    a category's items have (`scores`, the categories' own), its lift where first supported:
    in the category itself, else in its donors in order (`borrowed`: the scores of every donor
    group, `category` naming the group). An attribute supported nowhere is left out."""
    measured = [*KEYED, "lift", "users", "support"]
    own = scores.select(*measured, pl.lit(0, pl.Int32).alias("step"), pl.lit(OWN).alias("source"))
    lineage = pl.DataFrame(
        [
            (category, step, donor.group, donor.source)
            for category, chain in (donors or {}).items()
            for step, donor in enumerate(chain, 1)
        ],
        schema={"category": pl.String, "step": pl.Int32, "group": pl.String, "source": pl.String},
        orient="row",
    )
    lent = (
        lineage.join(
            (scores.clear() if borrowed is None else borrowed).rename({"category": "group"}),
            on="group",
        )
        .join(scores.select(KEYED), on=KEYED)  # only what the category's own items have
        .select(own.columns)
    )
    supported = (pl.col("users") >= MIN_USERS) & (pl.col("support") >= MIN_SUPPORT)
    return (
        pl.concat([own, lent])
        .filter(supported)
        .sort(*KEYED, "step")
        .unique(KEYED, keep="first", maintain_order=True)
        .join(scores.select(*KEYED, "coverage"), on=KEYED)
        .select(*KEYED, "coverage", "lift", "users", "support", "source")
    )


def _gain(
    attribute: tuple[str, str],
    measured: dict[tuple[str, str], tuple[float, float]],
    items: set[int],
    covered: set[int],
    total: int,
) -> tuple[float, float, str, str]:
    """Lift times the share of items the attribute adds; ties (as when every item is covered)
    by lift times the share it covers, then by name."""
    lift, coverage = measured[attribute]
    return (lift * len(items - covered) / total, lift * coverage, *attribute)


def choose_keys(evident: pl.DataFrame, presence: pl.DataFrame, per_category: int) -> pl.DataFrame:
    """Up to `per_category` key attributes per category, chosen greedily among those with a
    positive lift (`evidence`, own or borrowed): each next one is the attribute with the best
    lift times the share of the category's items it adds (items no chosen key covers yet).

    `presence`: category, item_idx, modality, name (which items have which attribute)."""
    positive = evident.filter(pl.col("lift") > 0)
    holders: dict[tuple[str, str, str], set[int]] = {}
    for (category, modality, name), group in presence.group_by("category", "modality", "name"):
        holders[(str(category), str(modality), str(name))] = set(group.get_column("item_idx"))
    sizes = dict(presence.group_by("category").agg(pl.col("item_idx").n_unique()).iter_rows())
    chosen: list[tuple[str, str, str, int]] = []
    for (category,), candidates in positive.sort("category").group_by(
        "category", maintain_order=True
    ):
        measured = {
            (m, n): (lift, coverage)
            for m, n, lift, coverage in candidates.select(
                "modality", "name", "lift", "coverage"
            ).iter_rows()
        }
        covered: set[int] = set()
        total = max(sizes.get(category, 1), 1)
        for rank in range(min(per_category, len(measured))):
            best = max(
                measured,
                key=lambda a: _gain(
                    a, measured, holders.get((str(category), *a), set()), covered, total
                ),
            )
            chosen.append((str(category), best[0], best[1], rank))
            covered |= holders.get((str(category), *best), set())
            del measured[best]
    picked = pl.DataFrame(
        chosen,
        schema={"category": pl.String, "modality": pl.String, "name": pl.String, "rank": pl.Int32},
        orient="row",
    )
    return (
        picked.join(evident, on=KEYED, how="left")
        .with_columns(
            (pl.col("lift").clip(lower_bound=0) * pl.col("coverage")).round(DIGITS).alias("score")
        )
        .select(KEY_COLUMNS)
        .sort("category", "rank")
    )
