"""Key features by measured lift with a minimum support, borrowed along a category's lineage
(its parents in the tree, or its nearest categories by text) where its own data is thin, and the
value pools the negatives draw from, borrowed along the same lineage."""

from __future__ import annotations

import polars as pl

from neggen_core.attributes.compute import chosen_keys
from neggen_core.attributes.contract import item_categories
from neggen_core.attributes.keys import MIN_SUPPORT, MIN_USERS, score_attributes
from neggen_core.categories import Donor, Lineage, category_lineage
from neggen_core.negatives.compute import pools

COLOURS = ("red", "blue", "green", "black", "white")
BRANDS = ("acme", "bic", "zebra")


class Shop:
    """Hand-made items, their attributes and users' train interactions."""

    def __init__(self) -> None:
        self.items: list[dict[str, object]] = []
        self.attributes: list[tuple[int, str, str, str]] = []
        self.train: list[tuple[int, int]] = []
        self.users = 0

    def item(self, categories: list[str], title: str, **values: str) -> int:
        idx = len(self.items)
        self.items.append(
            {"item_idx": idx, "categories": categories, "title": title, "description": None}
        )
        self.attributes += [(idx, "text", name, value) for name, value in values.items()]
        return idx

    def buyers(self, count: int, categories: list[str], title: str, by: str) -> None:
        """`count` users, each buying three items of `categories` that share their value of
        `by` (colour or brand) and differ in the other: users choose by `by`."""
        for user in range(self.users, self.users + count):
            for j in range(3):
                colour = COLOURS[user % 5] if by == "colour" else COLOURS[(user + j) % 5]
                brand = BRANDS[user % 3] if by == "brand" else BRANDS[j]
                self.train.append((user, self.item(categories, title, colour=colour, brand=brand)))
        self.users += count

    def frames(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        items = pl.DataFrame(
            self.items,
            schema={
                "item_idx": pl.Int64,
                "categories": pl.List(pl.String),
                "title": pl.String,
                "description": pl.String,
            },
        )
        attributes = pl.DataFrame(
            self.attributes,
            schema={
                "item_idx": pl.Int64,
                "modality": pl.String,
                "name": pl.String,
                "value": pl.String,
            },
            orient="row",
        )
        train = pl.DataFrame(
            self.train, schema={"user_idx": pl.Int64, "item_idx": pl.Int64}, orient="row"
        )
        return items, attributes, train


def _keys(shop: Shop, level: int = 1) -> pl.DataFrame:
    items, attributes, train = shop.frames()
    lineage = category_lineage(items, level)
    return chosen_keys(attributes, item_categories(items, level), train, 3, lineage)


def _rows(keys: pl.DataFrame, category: str) -> list[tuple[str, str]]:
    return keys.filter(pl.col("category") == category).select("name", "source").rows()


def test_score_attributes_records_users_and_support() -> None:
    shop = Shop()
    shop.buyers(4, ["Office", "Pens"], "Pen", by="colour")
    items, attributes, train = shop.frames()
    categories = items.select("item_idx", pl.lit("Pens").alias("category"))
    scores = score_attributes(attributes, categories, train)
    colour = scores.filter(pl.col("name") == "colour").row(0, named=True)
    assert (colour["users"], colour["support"]) == (4, 12)
    assert colour["lift"] > 0 and colour["coverage"] == 1.0


def test_a_thin_category_borrows_its_keys_from_its_parent() -> None:
    shop = Shop()
    shop.buyers(MIN_USERS, ["Office", "Writing", "Pencils"], "Pencil", by="colour")
    shop.buyers(2, ["Office", "Writing", "Pens"], "Pen", by="brand")  # too few to measure
    keys = _keys(shop, level=2)
    assert _rows(keys, "Pencils") == [("colour", "own")]
    assert _rows(keys, "Pens") == [("colour", "parent:Writing")]
    borrowed = keys.filter(pl.col("category") == "Pens").row(0, named=True)
    assert borrowed["users"] == MIN_USERS + 2  # the parent's support, measured on its items
    assert borrowed["support"] == 3 * (MIN_USERS + 2) >= MIN_SUPPORT
    assert borrowed["coverage"] == 1.0  # the share of the category's own items


def test_own_evidence_with_enough_support_is_not_overridden_by_the_parent() -> None:
    shop = Shop()
    shop.buyers(MIN_USERS, ["Office", "Writing", "Pencils"], "Pencil", by="colour")
    shop.buyers(MIN_USERS, ["Office", "Writing", "Pens"], "Pen", by="brand")
    keys = _keys(shop, level=2)
    assert _rows(keys, "Pens") == [("brand", "own")]  # its colour is measured, and not key
    assert _rows(keys, "Pencils") == [("colour", "own")]


def test_a_borrowed_key_is_one_the_categorys_items_have() -> None:
    shop = Shop()
    shop.buyers(MIN_USERS, ["Office", "Writing", "Pencils"], "Pencil", by="colour")
    for j in range(3):
        shop.item(["Office", "Writing", "Erasers"], "Eraser", brand=BRANDS[j])  # no colour
    keys = _keys(shop, level=2)
    assert _rows(keys, "Erasers") == []  # colour does not apply, brand has no lift anywhere


def test_without_a_tree_a_thin_category_borrows_from_the_nearest_by_text() -> None:
    shop = Shop()
    pen = "pen, quick-drying ink, smooth writing"
    shop.buyers(MIN_USERS, ["Ballpoint Pens"], f"Ballpoint {pen}", by="colour")
    shop.buyers(MIN_USERS, ["Desk Lamps"], "Desk lamp with bright light bulb", by="brand")
    shop.buyers(2, ["Gel Pens"], f"Gel {pen}", by="brand")
    keys = _keys(shop)
    assert _rows(keys, "Gel Pens") == [("colour", "similar:Ballpoint Pens")]
    assert _rows(keys, "Desk Lamps") == [("brand", "own")]


def test_global_only_where_no_parent_or_neighbour_has_the_evidence() -> None:
    shop = Shop()
    shop.buyers(MIN_USERS, ["Mugs"], "Mug", by="colour")
    shop.buyers(2, ["Lamps"], "Lamp", by="brand")  # nothing in common with mugs by text
    keys = _keys(shop)
    assert _rows(keys, "Lamps") == [("colour", "global")]
    items, attributes, train = shop.frames()
    without = chosen_keys(attributes, item_categories(items, 1), train, 3)  # no lineage given
    assert without.equals(keys)


def test_lineage_parents_come_from_the_category_lists() -> None:
    items = pl.DataFrame(
        {
            "item_idx": [0, 1, 2, 3],
            "categories": [["Office", "Paper"], ["Office", "Paper", "Notebooks"], [], ["Office"]],
            "title": ["a", "b", "c", "d"],
            "description": [None, None, None, None],
        }
    )
    lineage = category_lineage(items, 1)
    assert lineage.donors["Paper"] == (
        Donor("parent:Office", "parent:Office"),
        Donor("global", "global"),
    )
    members = dict(lineage.members.group_by("group").agg(pl.col("item_idx").sort()).iter_rows())
    assert members["parent:Office"] == [0, 1, 3]
    assert members["global"] == [0, 1, 2, 3]
    assert category_lineage(items, 1).donors == lineage.donors  # deterministic


def test_a_thin_pool_borrows_values_from_its_lineage_numbers_within_its_range() -> None:
    attributes = pl.DataFrame(
        {
            "item_idx": [0, 1, 2, 3, 4, 5, 0, 1, 2, 3],
            "modality": ["text"] * 10,
            "name": ["colour"] * 6 + ["length"] * 4,
            "value": [*COLOURS, "grey", "2 inch", "8 inch", "5 inch", "12 inch"],
        }
    )
    categories = pl.DataFrame(
        {"item_idx": [0, 1, 2, 3, 4, 5], "category": ["pens"] * 2 + ["pencils"] * 4}
    )
    lineage = Lineage(
        {"pens": (Donor("parent:writing", "parent:writing"),), "pencils": ()},
        pl.DataFrame({"group": ["parent:writing"] * 6, "item_idx": [0, 1, 2, 3, 4, 5]}),
    )
    own = pools(attributes, categories)
    assert own[("pens", "text", "colour")] == {"red": 1, "blue": 1}
    lent = pools(attributes, categories, lineage)
    assert set(lent[("pens", "text", "colour")]) == {*COLOURS, "grey"}
    assert lent[("pens", "text", "length")] == {"2 inch": 1, "5 inch": 1, "8 inch": 1}  # not 12
    assert lent[("pencils", "text", "colour")] == own[("pencils", "text", "colour")]
