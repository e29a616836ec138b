"""The embeddings stage's logic on tiny frames and matrices: what is embedded, in which order,
the vectors of rows, the negatives' scores and the report's counts."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from neggen_core.embeddings import compute
from neggen_core.embeddings.compute import Inputs
from neggen_core.encoders.cached import attribute_text, changed, normalise, text_key

ITEM_IDX = pl.Int32


def _items() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_idx": [1, 0, 2],
            "title": ["Pen", "Paper", "Ink"],
            "description": [None, None, None],
            "brand": [None, None, None],
            "categories": [[], [], []],
            "image_uri": [None, "paper.png", "ink.png"],
        },
        schema_overrides={"item_idx": ITEM_IDX},
    )


def _descriptions() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_idx": [0, 1, 2],
            "modality": ["image", "text", "image"],
            "text": ["a white sheet", "Pen", None],
        },
        schema_overrides={"item_idx": ITEM_IDX},
    )


def _attributes() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_idx": [0, 0, 1, 0, 1],
            "modality": ["text", "text", "text", "image", "text"],
            "name": ["size", "colour", "colour", "colour", "material"],
            "value": ["a4", "white", "blue", "white", "plastic"],
            "is_key": [True, True, True, True, False],
        },
        schema_overrides={"item_idx": ITEM_IDX},
    )


def _negatives(
    statuses: list[str], texts: list[str | None], kinds: list[str] | None = None
) -> pl.DataFrame:
    count = len(statuses)
    change = {"modality": "text", "name": "colour", "from_value": "x", "to_value": "red"}
    return pl.DataFrame(
        {
            "negative_id": [f"n{i}" for i in range(count)],
            "item_idx": [i % 3 for i in range(count)],
            "user_idx": [None] * count,
            "kind": kinds or ["key"] * count,
            "modality": ["text"] * count,
            "interventions": [[change]] * count,
            "text": texts,
            "visual_description": [None] * count,
            "status": statuses,
            "possible_false_negative": [False] * count,
        },
        schema_overrides={"item_idx": ITEM_IDX, "user_idx": pl.Int32},
    )


def test_item_texts_are_by_item_with_the_description_of_their_image_and_attributes() -> None:
    texts = compute.item_texts(_items(), _descriptions(), _attributes())

    assert texts["item_idx"].to_list() == [0, 1, 2]
    assert texts["text"].to_list() == ["Title: Paper", "Title: Pen", "Title: Ink"]
    assert texts["visual"].to_list() == ["a white sheet", None, None]
    assert texts["attributes"].to_list() == [
        "colour: white; image colour: white; size: a4",
        "colour: blue",  # its material is not a key feature
        None,
    ]
    assert texts["image_uri"].to_list() == ["paper.png", None, "ink.png"]
    assert compute.item_texts(_items(), _descriptions(), None)["attributes"].null_count() == 3


def test_embedding_inputs_keep_valid_negatives_and_count_the_others() -> None:
    negatives = _negatives(["valid", "invalid", "valid", "invalid"], ["a", None, "b", "c"])

    inputs = compute.embedding_inputs(_items(), _descriptions(), negatives, _attributes())

    assert inputs.negatives["negative_id"].to_list() == ["n0", "n2"]
    assert inputs.invalid_negatives == 2
    assert "visual" in inputs.negatives.columns
    assert "status" not in inputs.negatives.columns
    # a negative's key attributes are its positive's with its change; a positive without any
    # gives its negatives none
    assert inputs.negatives["attributes"].to_list() == [
        "colour: red; image colour: white; size: a4",
        None,
    ]
    without = compute.embedding_inputs(_items(), _descriptions(), negatives, None)
    assert without.negatives["attributes"].null_count() == 2


def test_a_valid_negative_without_text_is_an_error() -> None:
    negatives = _negatives(["valid", "valid"], ["a", None])
    with pytest.raises(ValueError, match=r"1 valid negatives have no text \(first: n1\)"):
        compute.embedding_inputs(_items(), _descriptions(), negatives, None)


def test_texts_are_distinct_longest_first_ties_by_text() -> None:
    items = pl.DataFrame(
        {"text": ["bb", "a", "ccc"], "visual": ["dd", None, "a"], "attributes": ["f", None, "a"]}
    )
    negatives = pl.DataFrame(
        {"text": ["ab", "ccc"], "visual": [None, "eeee"], "attributes": [None, "gg"]}
    )

    texts = Inputs(items=items, negatives=negatives, invalid_negatives=0).texts()

    assert texts == ["eeee", "ccc", "ab", "bb", "dd", "gg", "a", "f"]


def test_normalise_gives_unit_rows_and_keeps_zero_rows_zero() -> None:
    rows = normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))

    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)


def test_modal_vectors_join_the_modalities_and_mark_absent_ones() -> None:
    vectors = np.array(
        [[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 3.0]], dtype=np.float32
    )
    lookup = {text_key(t): r for r, t in enumerate(("pen", "a blue pen", "ink", "colour: blue"))}
    frame = pl.DataFrame(
        {
            "text": ["pen", "ink"],
            "visual": ["a blue pen", None],
            "attributes": [None, "colour: blue"],
        }
    )

    rows = compute.modal_vectors(frame, lookup, vectors)

    np.testing.assert_array_equal(rows.text, vectors[[0, 2]])
    np.testing.assert_array_equal(rows.visual, [[0.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(rows.attributes, [[0.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    assert rows.has_visual.tolist() == [True, False]
    assert rows.has_attributes.tolist() == [False, True]
    np.testing.assert_allclose(np.linalg.norm(rows.joint, axis=1), [1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(rows.joint[0], np.array([1.0, 2.0, 0.0]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_array_equal(rows.joint[1], [0.0, 0.0, 1.0])


def test_near_duplicates_are_flagged_at_the_threshold_with_the_stages_own_flags() -> None:
    items = np.eye(3, dtype=np.float32)
    negatives = pl.DataFrame(
        {"item_idx": [0, 1, 2], "possible_false_negative": [False, False, True]},
        schema_overrides={"item_idx": ITEM_IDX},
    )
    joint = normalise(np.array([[3.0, 4.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))

    scores = compute.score_negatives(
        negatives,
        joint,
        items,
        nearest=np.array([1, 0, -1]),
        similarity=np.array([0.8, 0.5, np.nan], dtype=np.float32),
        threshold=0.8,
    )

    np.testing.assert_allclose(scores.to_positive, [0.6, 1.0, 0.0], rtol=1e-6)
    assert scores.near_duplicate.tolist() == [True, False, False]
    assert scores.possible_false_negative.tolist() == [True, False, True]


def test_quantiles_are_rounded_and_empty_without_values() -> None:
    assert compute.quantiles(np.array([], dtype=np.float32)) == {}
    got = compute.quantiles(np.arange(11, dtype=np.float64) / 10)
    assert got == {"min": 0.0, "p10": 0.1, "p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}


def test_coverage_report_counts_what_was_embedded() -> None:
    inputs = compute.embedding_inputs(
        _items(),
        _descriptions(),
        _negatives(["valid", "valid", "invalid"], ["a", "b", None], ["key", "control", "key"]),
        _attributes(),
    )
    items = compute.modal_vectors(
        inputs.items,
        {text_key(t): 0 for t in inputs.texts()},
        np.ones((1, 2), dtype=np.float32),
    )
    scores = compute.NegativeScores(
        to_positive=np.array([0.5, 0.7]),
        nearest=np.array([2, -1]),
        similarity=np.array([0.9, np.nan]),
        near_duplicate=np.array([True, False]),
        possible_false_negative=np.array([True, True]),
    )

    report = compute.coverage_report(
        inputs, items, np.array([False, False, True]), {"0": "unreadable"}, scores
    )

    assert report["coverage"] == {
        "text": 3,
        "visual_description": 1,
        "attribute_text": 2,
        "image_features": 1,
        "without_image": 1,
    }
    assert report["image_failures"] == {"0": "unreadable"}
    assert (report["negatives_embedded"], report["controls_embedded"]) == (2, 1)
    assert report["negatives_invalid_not_embedded"] == 1
    assert (report["near_duplicates"], report["possible_false_negatives"]) == (1, 2)
    assert report["nearest_other_similarity"]["max"] == 0.9  # the negative with none is left out


def test_an_attribute_text_changes_only_where_a_key_feature_is_changed() -> None:
    rows = compute.attribute_rows(_attributes())
    assert rows[1] == [("text", "colour", "blue")]
    key = changed(rows[1], [("text", "colour", "red")])
    control = changed(rows[1], [("text", "material", "steel")])  # not a key feature
    assert (attribute_text(key), attribute_text(control)) == ("colour: red", "colour: blue")
