"""Key features per category: the attributes whose values best separate what users choose.

For a category and an attribute (modality + name), take the users' train interactions with the
category's items that have the attribute. If users pick by that attribute, each user's items
concentrate on few values: the mean share of a user's most frequent value is high. Chance also
concentrates values (an attribute with two values looks concentrated), so the score is the lift
over the same statistic with the interactions handed to users at random (a seeded shuffle),
times the share of the category's items that have the attribute (a key feature must apply).
Only the train split is used, never valid or test.
"""

from __future__ import annotations

import polars as pl

MIN_USERS = 3
DIGITS = 9


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
        .agg(pl.col("share").mean(), pl.len().alias("users"))
    )


def score_attributes(
    attributes: pl.DataFrame, item_category: pl.DataFrame, train: pl.DataFrame, seed: int = 0
) -> pl.DataFrame:
    """(category, modality, name, lift, coverage, score, users) for every attribute seen.

    `attributes`: item_idx, modality, name, value; `item_category`: item_idx, category;
    `train`: user_idx, item_idx (train split only)."""
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
    chance = _concentration(shuffled, "random_user").rename({"share": "chance", "users": "_u"})
    return (
        coverage.join(real, on=["category", "attribute"], how="left")
        .join(chance.drop("_u"), on=["category", "attribute"], how="left")
        .with_columns(
            # rounded: a parallel mean's last bits depend on summation order, and a rerun must
            # choose, and write, exactly the same
            (pl.col("share") - pl.col("chance")).fill_null(0.0).round(DIGITS).alias("lift"),
            pl.col("coverage").round(DIGITS),
            pl.col("users").fill_null(0).cast(pl.Int64),
        )
        .with_columns(
            (pl.col("lift").clip(lower_bound=0) * pl.col("coverage")).round(DIGITS).alias("score")
        )
        .select("category", "modality", "name", "lift", "coverage", "score", "users")
        .sort("category", "score", "modality", "name", descending=[False, True, False, False])
    )


def _gain(
    attribute: tuple[str, str],
    lift: dict[tuple[str, str], float],
    items: set[int],
    covered: set[int],
    total: int,
) -> tuple[float, float, str, str]:
    """Lift times the share of items the attribute adds; ties by lift, then by name."""
    return (lift[attribute] * len(items - covered) / total, lift[attribute], *attribute)


def choose_keys(scores: pl.DataFrame, presence: pl.DataFrame, per_category: int) -> pl.DataFrame:
    """Up to `per_category` key attributes per category, chosen greedily: each next one is the
    attribute with the best lift times the share of the category's items it adds (items no
    chosen key covers yet), among those with positive lift seen in enough users' histories. A
    category without such evidence takes the attributes that score best over all categories.

    `presence`: category, item_idx, modality, name (which items have which attribute)."""
    evident = scores.filter((pl.col("lift") > 0) & (pl.col("users") >= MIN_USERS))
    overall = (
        evident.group_by("modality", "name")
        .agg(pl.col("score").sum().alias("total"))
        .sort("total", "modality", "name", descending=[True, False, False])
        .head(per_category)
    )
    holders: dict[tuple[str, str, str], set[int]] = {}
    for (category, modality, name), group in presence.group_by("category", "modality", "name"):
        holders[(str(category), str(modality), str(name))] = set(group.get_column("item_idx"))
    sizes = dict(presence.group_by("category").agg(pl.col("item_idx").n_unique()).iter_rows())
    chosen: list[tuple[str, str, str, int]] = []
    for category in sorted(scores.get_column("category").unique().to_list()):
        candidates = evident.filter(pl.col("category") == category)
        lift = {(m, n): v for m, n, v in candidates.select("modality", "name", "lift").iter_rows()}
        if not lift:
            fallback = overall.select("modality", "name").iter_rows()
            chosen += [(category, m, n, rank) for rank, (m, n) in enumerate(fallback)]
            continue
        covered: set[int] = set()
        total = max(sizes.get(category, 1), 1)
        for rank in range(min(per_category, len(lift))):
            best = max(
                lift,
                key=lambda a: _gain(a, lift, holders.get((category, *a), set()), covered, total),
            )
            chosen.append((category, best[0], best[1], rank))
            covered |= holders.get((category, *best), set())
            del lift[best]
    picked = pl.DataFrame(
        chosen,
        schema={"category": pl.String, "modality": pl.String, "name": pl.String, "rank": pl.Int32},
        orient="row",
    )
    return (
        picked.join(scores, on=["category", "modality", "name"], how="left")
        .with_columns(pl.col("users").fill_null(0))
        .select("category", "modality", "name", "rank", "lift", "coverage", "score", "users")
        .sort("category", "rank")
    )
