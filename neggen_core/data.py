"""Training data in memory, as arrays: the split as per-user CSR lists, the items' modal
features, the generated negatives grouped by their positive, and what a per-user choice among
them needs (`NegativeChoices`). Nothing here reads a store: `neggen_core.train.contract` builds
these from the artifacts.

Membership tests ("has user u interacted with item i in train?", "has user u chosen value v in
category c?") are vectorised: the pairs are kept as sorted integer keys (`u * n_items + i`),
looked up with `np.searchsorted`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch

from neggen_core.artifacts.vectors import vectors_of


@dataclass(frozen=True)
class UserItems:
    """One split as a CSR: the items of user u are `items[indptr[u]:indptr[u + 1]]`."""

    indptr: np.ndarray
    items: np.ndarray

    @classmethod
    def from_pairs(cls, users: np.ndarray, items: np.ndarray, n_users: int) -> UserItems:
        order = np.lexsort((items, users))
        counts = np.bincount(users, minlength=n_users)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indptr, items[order].astype(np.int64))

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.indptr)

    def gather(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row in `users`, item) for every item of every user in `users`, without a loop."""
        starts, counts = self.indptr[users], self.counts[users]
        rows = np.repeat(np.arange(len(users)), counts)
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.items[np.repeat(starts, counts) + offsets]

    def keys(self, n_items: int) -> np.ndarray:
        users = np.repeat(np.arange(len(self.indptr) - 1), self.counts)
        return np.sort(users * n_items + self.items)


def contains(keys: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Whether each (user, item) pair (broadcast) is among the sorted `keys`."""
    query = users * n_items + items
    if not len(keys):
        return np.zeros(np.broadcast(users, items).shape, dtype=bool)
    position = np.searchsorted(keys, query)
    found = keys[np.minimum(position, len(keys) - 1)] == query
    present: np.ndarray = found & (position < len(keys))
    return present


@dataclass(frozen=True)
class ItemFeatures:
    """Modal features (text; the visual description and the attribute text where items have
    them) of the real items and of the generated negatives, grouped by their positive."""

    item_modal: torch.Tensor  # (n_items, M, D): modality m of item i; zeros where absent
    item_present: torch.Tensor  # (n_items, M) bool
    negative_modal: torch.Tensor  # (G, M, D)
    negative_present: torch.Tensor  # (G, M) bool
    negative_owner: torch.Tensor  # (G,) item_idx of each negative's positive, sorted
    negative_indptr: np.ndarray  # (n_items + 1,): the negatives of item i are rows [i]:[i+1]
    negative_minus_item: torch.Tensor  # (G, M, D): x_i- - x_i, each negative against its positive
    negative_ids: np.ndarray  # (G,) str: each row's negative_id
    names: tuple[str, ...]  # (M,): which of MODALITIES each modality is

    @classmethod
    def build(
        cls,
        item_modal: np.ndarray,
        item_present: np.ndarray,
        negative_modal: np.ndarray,
        negative_present: np.ndarray,
        owner: np.ndarray,
        ids: np.ndarray,
        names: tuple[str, ...] | None = None,
    ) -> ItemFeatures:
        """The features of items (n_items, M, D) and of their negatives (G, M, D), whose
        positives `owner` (G,) are sorted and whose `negative_id`s are `ids` (G,); the
        modalities `names` (the first M of MODALITIES where not given)."""
        item_modal = np.asarray(item_modal, dtype=np.float32)
        negative_modal = np.ascontiguousarray(negative_modal, dtype=np.float32)
        owner = np.asarray(owner, dtype=np.int64)
        if np.any(owner[1:] < owner[:-1]):
            raise ValueError("negatives must be sorted by their positive (owner)")
        counts = np.bincount(owner, minlength=len(item_modal))
        return cls(
            item_modal=torch.from_numpy(item_modal),
            item_present=torch.from_numpy(np.asarray(item_present, dtype=bool)),
            negative_modal=torch.from_numpy(negative_modal),
            negative_present=torch.from_numpy(np.asarray(negative_present, dtype=bool)),
            negative_owner=torch.from_numpy(owner),
            negative_indptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            negative_minus_item=torch.from_numpy(negative_modal - item_modal[owner]),
            negative_ids=np.asarray(ids, dtype=object),
            names=names if names is not None else MODALITIES[: item_modal.shape[1]],
        )

    @property
    def dim(self) -> int:
        return int(self.item_modal.shape[2])

    @property
    def modalities(self) -> int:
        return int(self.item_modal.shape[1])

    @property
    def generated(self) -> int:
        return int(self.negative_owner.shape[0])

    def candidates(self, positives: np.ndarray) -> np.ndarray:
        """(B, K) the rows of each positive's generated negatives, -1 past its own; K is the
        most any of them has."""
        start = self.negative_indptr[positives]
        count = self.negative_indptr[positives + 1] - start
        offsets = np.arange(int(count.max(initial=0)))
        rows: np.ndarray = np.where(offsets < count[:, None], start[:, None] + offsets, -1)
        return rows.astype(np.int64)


@dataclass(frozen=True)
class NegativeChoices:
    """What the per-user choice among generated negatives needs: a negative may be given to user
    u for positive i when u chose none of its new values (an intervention's (modality, name,
    to_value)) in i's category in train, that is when none of u's train items in that category
    has that value. Categories and (modality, name, value) triples are integer ids; u's choices
    are the sorted keys `(u * n_categories + c) * n_values + v`."""

    item_category: np.ndarray  # (n_items,) category id of each item
    negative_values: np.ndarray  # (G, C) value ids each negative changes to; -1 for none (the
    # padding, or a value no item has, which nobody chose)
    chosen: np.ndarray  # sorted keys of (user, category, value) of every user's train items
    n_categories: int
    n_values: int

    def eligible(self, users: np.ndarray, positives: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(B, K): whether generated negative `rows[b, k]` (-1: none) may be given to
        `users[b]` for `positives[b]`."""
        values = self.negative_values[np.maximum(rows, 0)]  # (B, K, C)
        group = users * self.n_categories + self.item_category[positives]
        chosen = contains(self.chosen, group[:, None, None], values, self.n_values)
        eligible: np.ndarray = (rows >= 0) & ~(chosen & (values >= 0)).any(-1)
        return eligible


@dataclass(frozen=True)
class TrainingData:
    n_users: int
    n_items: int
    train_users: np.ndarray  # (n_train,) the positives, pair by pair
    train_items: np.ndarray
    splits: Mapping[str, UserItems]
    train_keys: np.ndarray
    features: ItemFeatures | None
    choices: NegativeChoices | None = None  # for the per-user choice of generated negatives

    def interacted(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether user u has item i among its train interactions (broadcast)."""
        return contains(self.train_keys, users, items, self.n_items)


MODALITIES = ("text", "visual", "attributes")  # in this order, those the items have
MODAL_COLUMNS = ("text_vector", "visual_vector", "attribute_vector")


def modal_columns(items: pa.Table) -> tuple[str, ...]:
    """The modalities the items' embedding rows hold: the text's, then the visual
    description's and the attribute text's where any item has one."""
    return tuple(
        column
        for column in MODAL_COLUMNS
        if column == "text_vector"
        or (column in items.column_names and items.column(column).null_count < items.num_rows)
    )


def modal_arrays(table: pa.Table, columns: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, M, D) modal vectors and (rows, M) presence of embedding rows, one modality per
    column of `columns` (`modal_columns`), zeros where a row has none."""
    text = np.array(vectors_of(table.column("text_vector")))
    modal = np.zeros((len(text), len(columns), text.shape[1]), dtype=np.float32)
    present = np.ones((len(text), len(columns)), dtype=bool)
    modal[:, 0] = text
    for m, name in enumerate(columns[1:], 1):
        column = table.column(name)
        present[:, m] = column.is_valid().to_numpy(zero_copy_only=False)
        if present[:, m].any():
            modal[present[:, m], m] = vectors_of(column.filter(column.is_valid()))
    return modal, present


def item_features(
    items: pa.Table, negatives: pa.Table | None, kind: str = "key", skip_flagged: bool = True
) -> ItemFeatures:
    """The features of the item embedding rows (one per item, by item_idx) and of the
    generated negatives of `kind` (key, or control: changing attributes that are not key
    features), without those flagged as possible false negatives when `skip_flagged`; with
    no negatives table, none."""
    columns = modal_columns(items)
    names = tuple(MODALITIES[MODAL_COLUMNS.index(column)] for column in columns)
    item_modal, item_present = modal_arrays(items, columns)
    if negatives is None:
        none = np.zeros((0, *item_modal.shape[1:]), dtype=np.float32)
        return ItemFeatures.build(
            item_modal,
            item_present,
            none,
            np.zeros((0, item_modal.shape[1]), dtype=bool),
            np.zeros(0, dtype=np.int64),
            np.zeros(0, dtype=object),
            names,
        )
    negatives = negatives.filter(pc.equal(negatives.column("kind"), kind))
    if skip_flagged:
        flagged = negatives.column("possible_false_negative").to_numpy(zero_copy_only=False)
        negatives = negatives.filter(~flagged)
    owner = negatives.column("item_idx").to_numpy().astype(np.int64)
    order = np.argsort(owner, kind="stable")
    negatives, owner = negatives.take(order), owner[order]
    negative_modal, negative_present = modal_arrays(negatives, columns)
    ids = negatives.column("negative_id").to_numpy(zero_copy_only=False)
    return ItemFeatures.build(
        item_modal, item_present, negative_modal, negative_present, owner, ids, names
    )


def negative_choices(
    negative_ids: np.ndarray,
    negatives: pl.DataFrame,
    attributes: pl.DataFrame,
    categories: pl.DataFrame,
    train: UserItems,
) -> NegativeChoices:
    """The choice arrays of the generated negatives `negative_ids` (the features' rows, in
    order), from their `interventions` (negatives: negative_id, interventions, a list of
    modality, name, to_value), the items' attribute values (item_idx, modality, name, value),
    the items' categories (item_idx, category: a row for every item) and the train split. A
    `ValueError` names negatives the negatives table lacks."""
    triple = ["modality", "name", "value"]
    values = attributes.select(triple).unique().sort(triple).with_row_index("value_id")
    names, category = np.unique(categories["category"].to_numpy().astype(str), return_inverse=True)
    item_category = np.zeros(categories.height, dtype=np.int64)
    item_category[categories["item_idx"].to_numpy().astype(np.int64)] = category
    n_categories, n_values = len(names), values.height

    rows = pl.DataFrame(
        {"negative_id": np.asarray(negative_ids, dtype=str), "row": np.arange(len(negative_ids))},
        schema={"negative_id": pl.String, "row": pl.Int64},
    )
    missing = rows.join(negatives.select("negative_id"), on="negative_id", how="anti")
    if missing.height:
        raise ValueError(
            f"{missing.height} negatives ({', '.join(missing['negative_id'].head(3))}...) "
            "are not in the negatives table"
        )
    changes = (
        rows.join(negatives.select("negative_id", "interventions"), on="negative_id")
        .explode("interventions")
        .unnest("interventions")
        .join(values.rename({"value": "to_value"}), on=["modality", "name", "to_value"], how="left")
        .select(
            "row",
            pl.int_range(pl.len()).over("row").alias("slot"),
            pl.col("value_id").cast(pl.Int64).fill_null(-1),
        )
    )
    slot = changes["slot"].to_numpy()
    negative_values = np.full((rows.height, int(slot.max(initial=0)) + 1), -1, dtype=np.int64)
    negative_values[changes["row"].to_numpy(), slot] = changes["value_id"].to_numpy()

    item_values = attributes.join(values, on=triple).select(
        pl.col("item_idx").cast(pl.Int64), pl.col("value_id").cast(pl.Int64)
    )
    users = np.repeat(np.arange(len(train.indptr) - 1, dtype=np.int64), train.counts)
    chosen = pl.DataFrame({"user": users, "item_idx": train.items}).join(item_values, on="item_idx")
    user, item = chosen["user"].to_numpy(), chosen["item_idx"].to_numpy()
    keys = (user * n_categories + item_category[item]) * n_values + chosen["value_id"].to_numpy()
    return NegativeChoices(item_category, negative_values, np.unique(keys), n_categories, n_values)


def split_data(
    interactions: pl.DataFrame, n_users: int, n_items: int, features: ItemFeatures | None = None
) -> TrainingData:
    """Training data from interaction rows (user_idx, item_idx, split: train/valid/test).
    A `ValueError` names the users who interacted with every item in train (no negative can
    be sampled for them)."""
    splits = {}
    for split in ("train", "valid", "test"):
        part = interactions.filter(pl.col("split") == split)
        splits[split] = UserItems.from_pairs(
            part["user_idx"].to_numpy().astype(np.int64),
            part["item_idx"].to_numpy().astype(np.int64),
            n_users,
        )
    train = splits["train"]
    full = np.flatnonzero(train.counts >= n_items)
    if len(full):
        raise ValueError(
            f"user_idx {full[:5].tolist()} interacted with every item in train; "
            "no negative can be sampled for them (raise ingest.k_core or drop those users)"
        )
    return TrainingData(
        n_users=n_users,
        n_items=n_items,
        train_users=np.repeat(np.arange(n_users, dtype=np.int64), train.counts),
        train_items=train.items,
        splits=splits,
        train_keys=train.keys(n_items),
        features=features,
    )
