"""The negatives stage's logic on tiny frames: positives, units, pools, brands, seeds, rows and
the report."""

from __future__ import annotations

import polars as pl

from neggen_core.artifacts.schemas import NEGATIVES
from neggen_core.attributes.contract import UNCATEGORISED
from neggen_core.config import NegativesConfig
from neggen_core.llm.models import (
    Attribute,
    CompletedNegative,
    Intervention,
    InterventionPlan,
    Modality,
)
from neggen_core.negatives import compute
from neggen_core.negatives.models import Outcome, Positive
from neggen_core.negatives.screen import Examined
from tests.support.helpers import item as hand_made_item

ITEM_IDX = pl.Int32


def _items() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_idx": [2, 0, 1, 3],
            "title": ["Ream", "Blue Pen", "Black Pen", "Stapler"],
            "description": [None, "A pen.", None, None],
            "brand": [None, "Bic", "BIC", "bic"],
            "categories": [["Office", "Paper"], ["Office", "Pens"], ["Office"], []],
            "image_uri": [None, "pen.png", None, None],
        },
        schema_overrides={"item_idx": ITEM_IDX},
    )


def _attributes(rows: list[tuple[int, str, str, str, bool]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={
            "item_idx": ITEM_IDX,
            "modality": pl.String,
            "name": pl.String,
            "value": pl.String,
            "is_key": pl.Boolean,
        },
        orient="row",
    )


def _positive(idx: int, *attributes: tuple[Modality, str, str, bool]) -> Positive:
    item = hand_made_item(idx, f"Item {idx}")
    return Positive(
        item=item,
        category="Pens",
        attributes=tuple(
            Attribute(modality=m, name=n, value=v, is_key=k) for m, n, v, k in attributes
        ),
        visual_description=None,
    )


def _outcome(
    text: str, reason: str | None = None, modality: Modality = "text", to: str = "red"
) -> Outcome:
    change = Intervention(modality=modality, name="colour", from_value="blue", to_value=to)
    return Outcome(
        InterventionPlan(interventions=[change]),
        CompletedNegative(text=text, visual_description=None),
        reason,
    )


def _examined(*units: list[Outcome]) -> list[list[Examined]]:
    """Each unit's outcomes as candidates examined in order, none measured."""
    return [[Examined(j, outcome, None) for j, outcome in enumerate(unit)] for unit in units]


def test_positives_take_their_category_attributes_and_image_description() -> None:
    attributes = _attributes(
        [
            (0, "text", "colour", "blue", True),
            (1, "text", "colour", "black", False),
            (0, "image", "shape", "round", True),
        ]
    )
    descriptions = pl.DataFrame(
        {
            "item_idx": [0, 1],
            "modality": ["image", "text"],
            "text": ["a blue pen on a white background", "Black Pen"],
        },
        schema_overrides={"item_idx": ITEM_IDX},
    )

    positives = compute.positives_of(_items(), attributes, descriptions, level=1)

    assert list(positives) == [0, 1, 2, 3]
    assert {i: p.category for i, p in positives.items()} == {
        0: "Pens",
        1: "Office",  # its path is shorter than the level: its deepest category
        2: "Paper",
        3: UNCATEGORISED,
    }
    assert [(a.modality, a.name, a.value) for a in positives[0].attributes] == [
        ("text", "colour", "blue"),
        ("image", "shape", "round"),
    ]
    assert positives[2].attributes == ()
    assert positives[0].visual_description == "a blue pen on a white background"
    assert positives[1].visual_description is None  # a text description is not a visual one
    assert positives[0].item.text().startswith("Title: Blue Pen\nBrand: Bic")


def test_pools_count_the_items_of_each_category_having_each_value() -> None:
    attributes = _attributes(
        [
            (0, "text", "colour", "blue", True),
            (1, "text", "colour", "black", True),
            (1, "text", "colour", "blue", False),
            (2, "text", "colour", "white", True),
            (0, "image", "colour", "red", True),
        ]
    )
    categories = pl.DataFrame(
        {"item_idx": [0, 1, 2], "category": ["Pens", "Pens", "Paper"]},
        schema_overrides={"item_idx": ITEM_IDX},
    )

    assert compute.pools(attributes, categories) == {
        ("Pens", "text", "colour"): {"black": 1, "blue": 2},
        ("Paper", "text", "colour"): {"white": 1},
        ("Pens", "image", "colour"): {"red": 1},
    }


def test_buyer_values_are_what_the_items_buyers_bought_in_train() -> None:
    colours = [(i, "text", "colour", c, True) for i, c in enumerate(["blue", "black", "white"])]
    attributes = _attributes([*colours, (2, "text", "brand", "bic", False)])
    train = pl.DataFrame(
        {"user_idx": [0, 0, 1, 1], "item_idx": [0, 1, 1, 2]},
        schema_overrides={"user_idx": pl.Int32, "item_idx": ITEM_IDX},
    )
    chosen = compute.buyer_values(attributes, train)
    assert chosen[0] == {("text", "colour"): frozenset({"blue", "black"})}  # user 0 only
    assert chosen[1] == {  # users 0 and 1
        ("text", "colour"): frozenset({"blue", "black", "white"}),
        ("text", "brand"): frozenset({"bic"}),
    }
    assert chosen[2][("text", "colour")] == frozenset({"black", "white"})


def test_brands_are_spelled_as_most_items_spell_them_ties_by_spelling() -> None:
    assert compute.brands(_items()) == {"bic": "BIC"}  # Bic, BIC, bic: once each
    more = pl.concat([_items(), _items().filter(pl.col("brand") == "Bic")])
    assert compute.brands(more) == {"bic": "Bic"}


def test_units_are_items_in_order_or_train_pairs_by_user_then_item() -> None:
    positives = {idx: _positive(idx) for idx in (2, 0, 1)}
    assert compute.units(positives, None) == [(None, 0), (None, 1), (None, 2)]

    train = pl.DataFrame(
        {"user_idx": [1, 0, 1, 0], "item_idx": [0, 2, 1, 0], "split": ["train"] * 4},
        schema_overrides={"user_idx": pl.Int32, "item_idx": ITEM_IDX},
    )
    assert compute.units(positives, train) == [(0, 0), (0, 2), (1, 0), (1, 1)]


def test_each_kind_has_its_own_seed_and_controls_only_where_asked() -> None:
    assert compute.seeds(NegativesConfig(seed=7, round=2)) == {
        "key": "7:2",
        "control": "7:2:control",
    }
    assert compute.seeds(NegativesConfig(seed=7, round=2, controls=False)) == {"key": "7:2"}


def test_controls_are_asked_with_keys_and_other_attributes_swapped() -> None:
    positive = _positive(0, ("text", "colour", "blue", True), ("text", "size", "large", False))
    [(user, key)] = compute.asked("key", [(4, positive)])
    [(_, control)] = compute.asked("control", [(4, positive)])

    assert (user, key) == (4, positive)
    assert [(a.name, a.is_key) for a in control.attributes] == [("colour", False), ("size", True)]


def test_rows_number_each_units_negatives_and_flag_copies_of_real_items() -> None:
    first, second = _positive(0), _positive(1)
    rows = compute.Rows.of(NegativesConfig(round=3), "p1", {0: first, 1: second})
    key = rows.of_kind(
        "key",
        "lexicon/m",
        [(5, first), (None, second)],
        _examined(
            [_outcome("new"), _outcome(second.item.text())], [_outcome("x", "complete: bad")]
        ),
    )
    control = rows.of_kind("control", "lexicon/m", [(None, first)], _examined([_outcome("other")]))

    assert [r["negative_id"] for r in key + control] == [
        "r3-u5-i0-0",
        "r3-u5-i0-1",
        "r3-i1-0",
        "r3-i0-c0",
    ]
    assert [r["possible_false_negative"] for r in key] == [False, True, False]
    assert [(r["status"], r["reason"]) for r in key] == [
        ("valid", None),
        ("valid", None),
        ("invalid", "complete: bad"),
    ]
    frame = compute.negatives_frame(key + control)
    assert frame.schema == pl.Schema(NEGATIVES)
    assert frame["kind"].to_list() == ["key", "key", "key", "control"]
    assert frame["round"].unique().to_list() == [3]
    assert frame["interventions"][0].to_list() == [
        {"modality": "text", "name": "colour", "from_value": "blue", "to_value": "red"}
    ]


def test_report_counts_statuses_reasons_coverage_and_the_image_share() -> None:
    both = _positive(0, ("text", "colour", "blue", True), ("image", "shape", "round", True))
    text_only = _positive(1, ("text", "colour", "black", True), ("image", "shape", "flat", False))
    idle = _positive(2)
    positives = {0: both, 1: text_only, 2: idle}
    rows = compute.Rows.of(NegativesConfig(), "p1", positives)
    negatives = compute.negatives_frame(
        rows.of_kind(
            "key",
            "lexicon/m",
            [(None, both), (None, text_only)],
            _examined(
                [_outcome("a", modality="image"), _outcome("b")],
                [_outcome("c"), _outcome("d", "text attributes differ: x")],
            ),
        )
    )

    report = compute.report(negatives, positives, per_item=2)

    assert report["items"] == 3
    assert report["negatives"] == 4
    assert report["statuses"] == {"invalid": 1, "valid": 3}
    assert report["invalid_reasons"] == {"text attributes differ": 1}
    assert report["items_with_enough_valid"] == 1
    assert report["share_items_with_enough_valid"] == round(1 / 3, 4)
    assert report["items_without_negatives"] == 1
    assert report["valid_per_item"] == {1: 1, 2: 1}
    assert report["per_modality"] == {"image": 1, "text": 3}
    assert report["image_share_where_both_modalities"] == 0.5  # item 0 only


def test_stage_report_counts_controls_against_the_swapped_positives() -> None:
    text_keys = _positive(
        0,
        ("text", "colour", "blue", True),
        ("text", "size", "large", False),
        ("image", "shape", "flat", False),
    )
    positives = {0: text_keys}
    rows = compute.Rows.of(NegativesConfig(), "p1", positives)
    written = compute.negatives_frame(
        rows.of_kind("key", "lexicon/m", [(None, text_keys)], _examined([_outcome("a")]))
        + rows.of_kind(
            "control",
            "lexicon/m",
            [(None, text_keys)],
            _examined([_outcome("b", modality="image"), _outcome("c")]),
        )
    )

    full = compute.stage_report(written, positives, NegativesConfig(per_item=1))
    assert full["negatives"] == 1
    assert full["image_share_where_both_modalities"] == 0.0  # key features: text only
    assert full["controls"]["negatives"] == 2
    # swapped, its key features are `size` (text) and `shape` (image): both modalities
    assert full["controls"]["image_share_where_both_modalities"] == 0.5
    assert compute.summary(full, NegativesConfig(per_item=1, round=2)) == {
        "round": 2,
        "negatives": 1,
        "valid": 1,
        "share_items_with_enough_valid": 1.0,
        "controls": 2,
    }
    without = compute.stage_report(
        written.filter(pl.col("kind") == "key"), positives, NegativesConfig(controls=False)
    )
    assert "controls" not in without


def test_replacements_name_the_most_frequent_values_and_show_examples() -> None:
    positive = _positive(0, ("text", "colour", "blue", True))
    rows = compute.Rows.of(NegativesConfig(), "p1", {0: positive})
    outcomes = [_outcome(f"pen {i}", to=to) for i, to in enumerate(["red", "red", "green", "red"])]
    outcomes.append(_outcome("pen 4", "text attributes differ: x", to="pink"))
    negatives = compute.negatives_frame(
        rows.of_kind("key", "lexicon/m", [(None, positive)], _examined(outcomes))
    )

    found = compute.replacements(negatives.filter(pl.col("status") == "valid"), examples=2)

    assert found["top_replacement_values"] == [
        {"name": "colour", "value": "red", "negatives": 3, "share": 0.75},
        {"name": "colour", "value": "green", "negatives": 1, "share": 0.25},
    ]  # the invalid negative's pink is not counted
    assert [e["text"] for e in found["examples"]["colour"]] == ["pen 0", "pen 1"]
    assert found["examples"]["colour"][0]["change"] == "blue -> red"


def test_key_lift_gives_each_changed_keys_share_and_lift_in_its_category() -> None:
    positive = _positive(0, ("text", "colour", "blue", True), ("text", "brand", "bic", True))
    rows = compute.Rows.of(NegativesConfig(), "p1", {0: positive})
    brand = _outcome("Item 0 by Pilot")
    brand.plan.interventions[0] = Intervention(
        modality="text", name="brand", from_value="bic", to_value="pilot"
    )
    valid = compute.negatives_frame(
        rows.of_kind(
            "key",
            "lexicon/m",
            [(None, positive)],
            _examined([_outcome("a red pen"), _outcome("a green pen", to="green"), brand]),
        )
    )
    keys = pl.DataFrame(
        {
            "category": ["Pens", "Pens", "Paper"],
            "modality": ["text", "text", "text"],
            "name": ["colour", "brand", "colour"],
            "lift": [0.2, 0.05, 0.9],
            "source": ["own", "parent:Office", "own"],
        }
    )

    found = compute.key_lift(valid, {0: positive}, keys)

    assert found == {
        "text:colour": {"negatives": 2, "share": 0.6667, "mean_lift": 0.2, "sources": ["own"]},
        "text:brand": {"negatives": 1, "share": 0.3333, "mean_lift": 0.05, "sources": ["parent"]},
    }  # the lift of the positive's category (Pens), not another's


def test_a_negative_changing_two_key_features_counts_under_each() -> None:
    """`negatives.interventions: 2`: the report counts each change (its tables once failed on
    a negative with two)."""
    positive = _positive(0, ("text", "colour", "blue", True), ("text", "brand", "bic", True))
    rows = compute.Rows.of(NegativesConfig(), "p1", {0: positive})
    both = _outcome("a red pen by Pilot")
    both.plan.interventions.append(
        Intervention(modality="text", name="brand", from_value="bic", to_value="pilot")
    )
    valid = compute.negatives_frame(
        rows.of_kind("key", "lexicon/m", [(None, positive)], _examined([both, _outcome("x")]))
    )
    keys = pl.DataFrame(
        {
            "category": ["Pens", "Pens"],
            "modality": ["text", "text"],
            "name": ["colour", "brand"],
            "lift": [0.2, 0.05],
            "source": ["own", "own"],
        }
    )

    found = compute.replacements(valid)
    lift = compute.key_lift(valid, {0: positive}, keys)

    assert [(r["value"], r["negatives"]) for r in found["top_replacement_values"]] == [
        ("red", 2),
        ("pilot", 1),
    ]
    assert found["examples"]["brand"][0]["text"] == "a red pen by Pilot"
    assert (lift["text:colour"]["negatives"], lift["text:brand"]["negatives"]) == (2, 1)
