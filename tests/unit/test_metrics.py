"""Metrics against values computed by hand; the evaluator's masking on a six-item catalogue."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neggen_core.config import EvaluateConfig
from neggen_core.data import TrainingData, UserItems, contains
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.evaluation.metrics import per_user
from neggen_core.models.base import Batch, Losses, Recommender

# user A: relevant {1, 3}, ranked [3, 0, 1, 4, 2]; user B: relevant {4}, ranked [0, 1, 2, 4, 3]
HITS = np.array([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0]], dtype=bool)
RELEVANT = np.array([2, 1])


def test_metrics_match_hand_computed_values() -> None:
    found = per_user(HITS, RELEVANT, (1, 3, 5))
    assert found["recall@1"].tolist() == [0.5, 0.0]
    assert found["recall@3"].tolist() == [1.0, 0.0]
    assert found["recall@5"].tolist() == [1.0, 1.0]
    ideal_a = 1 + 1 / math.log2(3)  # two relevant items: the ideal DCG has two hits
    assert found["ndcg@3"][0] == pytest.approx((1 + 1 / math.log2(4)) / ideal_a)
    assert found["ndcg@3"][0] == pytest.approx(0.919721, abs=1e-6)
    assert found["ndcg@5"][1] == pytest.approx(1 / math.log2(5))
    assert found["ndcg@1"].tolist() == [1.0, 0.0]
    assert found["precision@3"].tolist() == pytest.approx([2 / 3, 0.0])
    assert found["precision@5"].tolist() == pytest.approx([0.4, 0.2])
    assert found["hit@3"].tolist() == [1.0, 0.0]
    assert found["hit@5"].tolist() == [1.0, 1.0]


def test_the_ideal_dcg_stops_at_k() -> None:
    # 5 relevant items, 2 of them at ranks 1 and 2, K = 2: a perfect top 2
    found = per_user(np.array([[1, 1, 0]], dtype=bool), np.array([5]), (2,))
    assert found["ndcg@2"][0] == pytest.approx(1.0)
    assert found["recall@2"][0] == pytest.approx(0.4)


class FixedScores(Recommender):
    """Every user scores the items the same fixed way."""

    def __init__(self, scores: list[float]):
        super().__init__()
        self.scores = torch.tensor(scores)

    def full_sort_predict(
        self, users: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.scores.repeat(len(users), 1)

    def calculate_loss(self, batch: Batch) -> Losses:
        raise AssertionError("an evaluation never trains")

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise AssertionError("an evaluation samples nothing")


def _tiny() -> TrainingData:
    def split(pairs: list[tuple[int, int]]) -> UserItems:
        users = np.array([u for u, _ in pairs])
        items = np.array([i for _, i in pairs])
        return UserItems.from_pairs(users, items, 2)

    train = split([(0, 0), (0, 2), (1, 5)])
    return TrainingData(
        n_users=2,
        n_items=6,
        train_users=np.array([0, 0, 1]),
        train_items=np.array([0, 2, 5]),
        splits={"train": train, "valid": split([(0, 1), (1, 3)]), "test": split([(0, 4), (1, 4)])},
        train_keys=train.keys(6),
        features=None,
    )


def test_the_evaluator_masks_train_items_and_optionally_valid_ones() -> None:
    model = FixedScores([0.9, 0.1, 0.8, 0.6, 0.5, 0.95])
    data = _tiny()
    evaluator = Evaluator(data, EvaluateConfig(ks=(3, 20)))
    valid = evaluator.rank(model, "valid")
    # user 0 without its train items 0 and 2: 5, 3, 4, 1; user 1 without 5: 0, 2, 3, 4, 1
    assert valid.items[:, :4].tolist() == [[5, 3, 4, 1], [0, 2, 3, 4]]
    assert valid.per_user["recall@3"].tolist() == [0.0, 1.0]
    test = evaluator.rank(model, "test")
    assert test.per_user["recall@3"].tolist() == [1.0, 0.0]  # user 1's item 4 is 4th
    masked = Evaluator(data, EvaluateConfig(ks=(3, 20), mask_valid_at_test=True))
    assert masked.rank(model, "test").per_user["recall@3"].tolist() == [1.0, 1.0]


def test_twenty_must_be_among_the_cutoffs() -> None:
    with pytest.raises(ValueError, match="Recall@20"):
        EvaluateConfig(ks=(10, 50))


def test_a_split_without_pairs_contains_nothing() -> None:
    empty = np.array([], dtype=np.int64)
    assert contains(empty, np.array([[0], [1]]), np.array([[2, 3], [4, 5]]), 6).tolist() == [
        [False, False],
        [False, False],
    ]


def test_cpu_batches_kept_cache_sized_rank_with_the_same_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from neggen_core.evaluation import evaluator as module
    from neggen_core.models.backbones import MF

    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30

    def split(pairs: int) -> UserItems:
        users, items = rng.integers(0, n_users, pairs), rng.integers(0, n_items, pairs)
        return UserItems.from_pairs(users, items, n_users)

    train = split(200)
    data = TrainingData(
        n_users=n_users,
        n_items=n_items,
        train_users=np.zeros(0, dtype=np.int64),
        train_items=np.zeros(0, dtype=np.int64),
        splits={"train": train, "valid": split(60), "test": split(60)},
        train_keys=train.keys(n_items),
        features=None,
    )
    model = MF(n_users, n_items, 64, 0.0, seed=1)
    whole = Evaluator(data, EvaluateConfig(ks=(5, 20))).rank(model, "test")

    calls: list[int] = []
    predict = model.full_sort_predict

    def counted(users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(len(users))
        return predict(users, out)

    monkeypatch.setattr(model, "full_sort_predict", counted)
    # batches of 16 users: the last one reaches back, none is smaller
    monkeypatch.setattr(module, "CPU_BATCH_BYTES", 3 * 4 * n_items)
    monkeypatch.setattr(module, "MIN_CPU_ROWS", 16)
    tiled = Evaluator(data, EvaluateConfig(ks=(5, 20))).rank(model, "test")
    assert calls == [16] * -(-len(whole.users) // 16)
    assert np.array_equal(tiled.items, whole.items)
    assert np.array_equal(tiled.scores, whole.scores)
