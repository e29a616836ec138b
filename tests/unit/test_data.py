"""Training data in memory: the split as per-user lists, train membership, the modal features,
the generated negatives grouped by their positive and which of them a user may be given.
Hand-made frames, no store."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from neggen_core.artifacts.vectors import vector_array
from neggen_core.data import ItemFeatures, UserItems, item_features, negative_choices, split_data

# user 0: train 2, 0; valid 1; test 3.  user 1: train 1; test 2.  user 2: train 3, 0; valid 2
INTERACTIONS = pl.DataFrame(
    {
        "user_idx": [0, 0, 0, 0, 1, 1, 2, 2, 2],
        "item_idx": [2, 0, 1, 3, 1, 2, 3, 0, 2],
        "split": ["train", "train", "valid", "test", "train", "test", "train", "train", "valid"],
    }
)


def test_each_split_is_a_csr_of_sorted_items_per_user() -> None:
    data = split_data(INTERACTIONS, n_users=3, n_items=4)
    train, valid, test = (data.splits[s] for s in ("train", "valid", "test"))
    assert train.indptr.tolist() == [0, 2, 3, 5]
    assert train.items.tolist() == [0, 2, 1, 0, 3]
    assert valid.indptr.tolist() == [0, 1, 1, 2] and valid.items.tolist() == [1, 2]
    assert test.indptr.tolist() == [0, 1, 2, 2] and test.items.tolist() == [3, 2]
    assert test.counts.tolist() == [1, 1, 0]
    # the train pairs, one by one, as the trainer batches them
    assert data.train_users.tolist() == [0, 0, 1, 2, 2]
    assert data.train_items.tolist() == [0, 2, 1, 0, 3]
    assert (data.n_users, data.n_items, data.features) == (3, 4, None)


def test_interacted_is_train_membership_broadcast() -> None:
    data = split_data(INTERACTIONS, n_users=3, n_items=4)
    # user 0's valid item 1 and test item 3 are not train interactions
    assert data.interacted(np.array([0, 0, 0, 1, 2]), np.array([2, 1, 3, 1, 3])).tolist() == [
        True,
        False,
        False,
        True,
        True,
    ]
    grid = data.interacted(np.arange(3)[:, None], np.arange(4)[None, :])
    assert grid.astype(int).tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1]]


def test_a_user_with_every_item_in_train_is_named() -> None:
    every = pl.DataFrame(
        {
            "user_idx": [0, 0, 1, 1, 1, 2],
            "item_idx": [0, 1, 0, 1, 2, 2],
            "split": ["train", "test", "train", "train", "train", "train"],
        }
    )
    with pytest.raises(ValueError, match=r"user_idx \[1\] interacted with every item"):
        split_data(every, n_users=3, n_items=3)
    split_data(every, n_users=3, n_items=4)  # a fourth item leaves user 1 one to sample


def _vectors(rows: list[list[float] | None]) -> pa.FixedSizeListArray:
    present = np.array([row is not None for row in rows])
    matrix = np.array([row if row is not None else [0.0, 0.0] for row in rows])
    return vector_array(matrix, None if present.all() else present)


# three items; only item 1 has a visual description
ITEMS = pa.table(
    {
        "item_idx": [0, 1, 2],
        "text_vector": _vectors([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        "visual_vector": _vectors([None, [2.0, 2.0], None]),
    }
)
# given out of owner order: key negatives of items 2, 0, 2 (flagged) and 0; a control of item 0
NEGATIVES = pa.table(
    {
        "negative_id": ["n2a", "n0a", "c0", "n2b", "n0b"],
        "item_idx": [2, 0, 0, 2, 0],
        "kind": ["key", "key", "control", "key", "key"],
        "possible_false_negative": [False, False, False, True, False],
        "text_vector": _vectors([[10.0, 0.0], [20.0, 0.0], [30.0, 0.0], [40.0, 0.0], [50.0, 0.0]]),
        "visual_vector": _vectors([None, [5.0, 5.0], None, None, None]),
    }
)


def _texts(features: ItemFeatures) -> list[float]:
    """The first text coordinate of each negative, in the features' order."""
    texts: list[float] = features.negative_modal[:, 0, 0].tolist()
    return texts


def test_key_negatives_are_grouped_by_their_positive_without_the_flagged() -> None:
    features = item_features(ITEMS, NEGATIVES, "key", skip_flagged=True)
    # sorted by owner, stable: item 0's two negatives in table order, then item 2's
    assert features.negative_owner.tolist() == [0, 0, 2]
    assert _texts(features) == [20.0, 50.0, 10.0]
    assert features.negative_ids.tolist() == ["n0a", "n0b", "n2a"]
    assert features.negative_indptr.tolist() == [0, 2, 2, 3]
    assert features.negative_present.tolist() == [[True, True], [True, False], [True, False]]
    # each negative against its own positive, modality by modality
    assert features.negative_minus_item[0].tolist() == [[19.0, 0.0], [5.0, 5.0]]
    assert features.negative_minus_item[2].tolist() == [[9.0, -1.0], [0.0, 0.0]]


def test_flagged_negatives_are_kept_unless_skipped() -> None:
    features = item_features(ITEMS, NEGATIVES, "key", skip_flagged=False)
    assert features.negative_owner.tolist() == [0, 0, 2, 2]
    assert _texts(features) == [20.0, 50.0, 10.0, 40.0]


def test_control_negatives_are_only_the_controls() -> None:
    features = item_features(ITEMS, NEGATIVES, "control")
    assert features.negative_owner.tolist() == [0]
    assert _texts(features) == [30.0]
    assert features.negative_indptr.tolist() == [0, 1, 1, 1]


def test_items_carry_the_visual_modality_only_where_the_dataset_has_it() -> None:
    features = item_features(ITEMS, NEGATIVES)
    assert features.modalities == 2 and features.dim == 2
    assert features.item_present.tolist() == [[True, False], [True, True], [True, False]]
    assert features.item_modal[1].tolist() == [[0.0, 1.0], [2.0, 2.0]]
    text_only = ITEMS.set_column(2, "visual_vector", _vectors([None, None, None]))
    assert item_features(text_only, NEGATIVES).modalities == 1


def test_the_attribute_texts_are_the_last_modality_where_items_have_them() -> None:
    items = ITEMS.append_column("attribute_vector", _vectors([[0.0, 3.0], None, [3.0, 0.0]]))
    negatives = NEGATIVES.append_column(
        "attribute_vector", _vectors([[4.0, 0.0], [0.0, 3.0], None, [1.0, 1.0], [6.0, 6.0]])
    )
    features = item_features(items, negatives, "key", skip_flagged=True)
    assert features.modalities == 3
    assert features.item_present.tolist() == [
        [True, False, True],
        [True, True, False],
        [True, False, True],
    ]
    assert features.item_modal[2, 2].tolist() == [3.0, 0.0]
    # item 0's negatives n0a, n0b: their changed attributes against item 0's
    assert features.negative_minus_item[0, 2].tolist() == [0.0, 0.0]
    assert features.negative_minus_item[1, 2].tolist() == [6.0, 3.0]
    text_only = items.set_column(2, "visual_vector", _vectors([None, None, None]))
    assert item_features(text_only, negatives).modalities == 2


def test_the_candidates_of_a_positive_are_its_own_rows_padded() -> None:
    features = item_features(ITEMS, NEGATIVES, "key", skip_flagged=True)  # 2, 0 and 1 negatives
    assert features.candidates(np.array([2, 0, 1, 0])).tolist() == [
        [2, -1],
        [0, 1],
        [-1, -1],
        [0, 1],
    ]
    assert features.candidates(np.array([1])).shape == (1, 0)


def _interventions(*changes: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"modality": m, "name": n, "from_value": "old", "to_value": v} for m, n, v in changes]


def test_a_negative_is_eligible_unless_the_user_chose_its_new_value_in_that_category() -> None:
    """Items 0, 1 in category "cups", 2, 3 in "mats". User 0 trained on 0 (red, cotton) and 3
    (blue); user 1 on 1 (blue). A negative is ineligible exactly when one of its new values
    (modality, name, to_value) is the value of one of the user's train items in the
    positive's category."""
    attributes = pl.DataFrame(
        [
            (0, "text", "colour", "red"),
            (0, "text", "material", "cotton"),
            (1, "text", "colour", "blue"),
            (2, "text", "colour", "green"),
            (3, "text", "colour", "blue"),
            (3, "image", "colour", "red"),
        ],
        schema=["item_idx", "modality", "name", "value"],
        orient="row",
    )
    categories = pl.DataFrame(
        {"item_idx": [0, 1, 2, 3], "category": ["cups", "cups", "mats", "mats"]}
    )
    negatives = pl.DataFrame(
        {
            "negative_id": ["to-red", "to-blue", "to-cotton-and-blue", "to-pink", "ignored"],
            "interventions": [
                _interventions(("text", "colour", "red")),
                _interventions(("text", "colour", "blue")),
                _interventions(("text", "material", "cotton"), ("text", "colour", "blue")),
                _interventions(("text", "colour", "pink")),  # no item is pink
                _interventions(("text", "colour", "red")),
            ],
        }
    )
    ids = np.array(["to-red", "to-blue", "to-cotton-and-blue", "to-pink"])
    train = UserItems.from_pairs(np.array([0, 0, 1]), np.array([0, 3, 1]), n_users=2)
    choices = negative_choices(ids, negatives, attributes, categories, train)
    assert choices.negative_values.shape == (4, 2)
    assert (choices.negative_values[3] == -1).all()  # pink: a value nobody has, nobody chose

    rows = np.array([[0, 1, 2, 3, -1]] * 4)
    users, positives = np.array([0, 0, 1, 1]), np.array([1, 2, 0, 3])
    assert choices.eligible(users, positives, rows).tolist() == [
        # user 0 in cups chose red and cotton (item 0): blue only
        [False, True, False, True, False],
        # user 0 in mats chose text blue (item 3; its image red is another attribute)
        [True, False, False, True, False],
        # user 1 in cups chose blue (item 1)
        [True, False, False, True, False],
        # user 1 chose nothing in mats
        [True, True, True, True, False],
    ]

    with pytest.raises(ValueError, match=r"1 negatives \(unknown\.\.\.\) are not in the"):
        negative_choices(np.array(["unknown"]), negatives, attributes, categories, train)
