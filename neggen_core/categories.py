"""The categories that group items (`item_categories`, a view of ingest's items that the
attributes and negatives stages share) and where a category borrows from when its own data is
thin: its lineage, nearest first.

A grouping category (`item_categories`) has a parent in the category tree: the name that most
often comes just before it in its items' category lists; the parent's parent is the next, and so
on. A parent's group (`parent:<name>`) is every item whose list names it. A category without a
parent (single names without a tree, or a top-level name) borrows from its nearest categories by
item text instead (`similar:<names>`): its own items and those of its nearest categories, by
the cosine between TF-IDF centroids of the items' titles and descriptions, until the group
holds `SIMILAR_ITEMS` items. Last
comes `global`, every item. No model, no random state: the same items give the same lineage.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import polars as pl

SIMILAR_ITEMS = 50  # a category without a parent pools its nearest until this many items
SIMILAR_MAX = 10  # and at most this many of them
MAX_TERMS = 4096  # the TF-IDF vocabulary: the terms most items use (2 or more)
BLOCK = 512  # categories whose neighbours are found at once
DIGITS = 6  # float32 centroids: cosines compared to 6 decimals
GLOBAL = "global"
UNCATEGORISED = "(uncategorised)"


def item_categories(items: pl.DataFrame, level: int) -> pl.DataFrame:
    """item_idx -> the category that groups it for key features (its path at `level`, or its
    deepest level when the path is shorter)."""
    path = pl.col("categories")
    depth = path.list.len()
    chosen = (
        pl.when(depth > level)
        .then(path.list.get(level, null_on_oob=True))
        .otherwise(path.list.last())
    )
    return items.select("item_idx", chosen.fill_null(UNCATEGORISED).alias("category"))


@dataclass(frozen=True)
class Donor:
    """A group a category may borrow from: its id (in `Lineage.members`) and the source a
    borrowed value or key records."""

    group: str
    source: str


@dataclass(frozen=True)
class Lineage:
    """Per grouping category, its donor groups nearest first; `members` (group, item_idx): the
    items of every donor group."""

    donors: Mapping[str, tuple[Donor, ...]]
    members: pl.DataFrame

    @classmethod
    def global_only(cls, categories: pl.DataFrame) -> Lineage:
        """No tree, no neighbours: every category of `categories` (item_idx, category)
        borrows from all of their items only."""
        names = categories.get_column("category").unique().to_list()
        members = categories.select(pl.lit(GLOBAL).alias("group"), "item_idx").sort("item_idx")
        return cls({str(name): (Donor(GLOBAL, GLOBAL),) for name in names}, members)


def _parents(paths: pl.Series) -> dict[str, str]:
    """name -> the name that most often comes just before it in a category list (ties: the
    first by name)."""
    before: Counter[tuple[str, str]] = Counter()
    for path in paths.to_list():
        for parent, child in pairwise(path):
            if parent != child:
                before[(child, parent)] += 1
    ranked = sorted(before.items(), key=lambda entry: (entry[0][0], -entry[1], entry[0][1]))
    parents: dict[str, str] = {}
    for (child, parent), _ in ranked:
        parents.setdefault(child, parent)
    return parents


def _ancestors(category: str, parents: Mapping[str, str]) -> list[str]:
    chain: list[str] = []
    current = parents.get(category)
    while current is not None and current != category and current not in chain:
        chain.append(current)
        current = parents.get(current)
    return chain


def centroids(items: pl.DataFrame, categories: pl.DataFrame) -> tuple[list[str], np.ndarray]:
    """(category names, unit-length TF-IDF centroids of their items' titles and descriptions,
    one row each, in name order)."""
    text = pl.concat_str(
        pl.col("title").fill_null(""), pl.col("description").fill_null(""), separator=" "
    )
    terms = (
        items.select("item_idx", text.str.to_lowercase().str.extract_all(r"[a-z]{2,}").alias("t"))
        .explode("t")
        .drop_nulls("t")
        .group_by("item_idx", "t")
        .len()
    )
    documents = max(items.height, 1)
    vocabulary = (
        terms.group_by("t")
        .agg(pl.len().alias("df"))
        .filter(pl.col("df") >= 2)
        .sort(["df", "t"], descending=[True, False])
        .head(MAX_TERMS)
        .with_columns(
            ((documents + 1) / (pl.col("df") + 1)).log().add(1.0).alias("idf"),
            pl.int_range(pl.len()).alias("column"),
        )
    )
    weights = (
        terms.join(vocabulary, on="t")
        .with_columns((pl.col("len") * pl.col("idf")).alias("w"))
        .with_columns(pl.col("w") / (pl.col("w") ** 2).sum().sqrt().over("item_idx"))
        .join(categories, on="item_idx")
        .group_by("category", "column")
        .agg(pl.col("w").sum())
    )
    names = sorted(categories.get_column("category").unique().to_list())
    row = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(names), vocabulary.height), dtype=np.float32)
    for category, column, weight in weights.iter_rows():
        matrix[row[category], column] = weight
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return names, np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def nearest(
    items: pl.DataFrame, categories: pl.DataFrame, of: Sequence[str]
) -> dict[str, list[str]]:
    """Each category of `of` -> the other categories nearest to it by item text (cosine of
    TF-IDF centroids above 0, rounded; ties by name), as many as it takes for it and them to
    hold `SIMILAR_ITEMS` items (at least one, at most `SIMILAR_MAX`)."""
    names, matrix = centroids(items, categories)
    sizes = dict(categories.group_by("category").len().iter_rows())
    row = {name: i for i, name in enumerate(names)}
    found: dict[str, list[str]] = {}
    for start in range(0, len(of), BLOCK):
        block = list(of[start : start + BLOCK])
        # rounded: a centroid's last bits depend on summation order, the neighbours must not
        cosine = np.round(matrix[[row[name] for name in block]] @ matrix.T, DIGITS)
        for name, scores in zip(block, cosine, strict=True):
            scores[row[name]] = 0.0
            held, chosen = sizes[name], list[str]()
            for j in np.argsort(-scores, kind="stable")[:SIMILAR_MAX]:
                if scores[j] <= 0 or (chosen and held >= SIMILAR_ITEMS):
                    break
                chosen.append(names[j])
                held += sizes[names[j]]
            found[name] = chosen
    return found


def category_lineage(items: pl.DataFrame, level: int) -> Lineage:
    """The lineage of every grouping category of `items` (item_idx, categories, title,
    description) at `level`: its parents in the category tree, or, without a parent, its
    nearest categories by text; then `global`."""
    categories = item_categories(items, level)
    parents = _parents(items.get_column("categories"))
    names = sorted(categories.get_column("category").unique().to_list())
    chains = {name: _ancestors(name, parents) for name in names}
    orphans = [name for name in names if not chains[name]]
    neighbours = nearest(items, categories, orphans) if orphans else {}
    listed = items.select("item_idx", pl.col("categories").alias("group")).explode("group")
    groups = [
        listed.drop_nulls("group")
        .unique()
        .select((pl.lit("parent:") + pl.col("group")).alias("group"), "item_idx")
    ]
    donors: dict[str, tuple[Donor, ...]] = {}
    pooled: list[tuple[str, str]] = []  # (similar group, a category in it)
    for name in names:
        chain = [Donor(f"parent:{parent}", f"parent:{parent}") for parent in chains[name]]
        if not chain and neighbours.get(name):
            group = f"similar:{name}"
            chain = [Donor(group, "similar:" + "; ".join(neighbours[name]))]
            pooled += [(group, category) for category in [name, *neighbours[name]]]
        donors[name] = (*chain, Donor(GLOBAL, GLOBAL))
    similar = pl.DataFrame(pooled, schema={"group": pl.String, "category": pl.String}, orient="row")
    groups.append(similar.join(categories, on="category").select("group", "item_idx"))
    groups.append(items.select(pl.lit(GLOBAL).alias("group"), "item_idx"))
    used = {donor.group for chain in donors.values() for donor in chain}
    members = (
        pl.concat([g.select(pl.col("group").cast(pl.String), "item_idx") for g in groups])
        .filter(pl.col("group").is_in(list(used)))
        .unique()
        .sort("group", "item_idx")
    )
    return Lineage(donors, members)
