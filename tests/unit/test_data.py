"""Training data in memory: the split as per-user lists, train membership, the modal features
and the generated negatives grouped by their positive. Hand-made frames, no store."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from neggen_core.artifacts.vectors import vector_array
from neggen_core.data import ItemFeatures, item_features, split_data

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
