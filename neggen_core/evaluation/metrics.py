"""Top-K metrics over a hits matrix (row u, column r: is the item at rank r relevant to user u?).

As MMRec: Recall@K = hits in the top K / |relevant|; NDCG@K with binary gain, DCG = sum of
1 / log2(rank + 1) over the hits (rank from 1) and the ideal DCG over min(|relevant|, K) hits;
Precision@K = hits / K; Hit@K = 1 when any of the top K is relevant. Each is averaged over users.
"""

from __future__ import annotations

import numpy as np

METRICS = ("recall", "ndcg", "precision", "hit")


def recall_at(hits: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    recall: np.ndarray = hits[:, :k].sum(1) / relevant
    return recall


def ndcg_at(hits: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits[:, :k] * discounts[: hits[:, :k].shape[1]]).sum(1)
    ideal = np.cumsum(discounts)[np.minimum(relevant, k) - 1]
    ndcg: np.ndarray = dcg / ideal
    return ndcg


def precision_at(hits: np.ndarray, k: int) -> np.ndarray:
    precision: np.ndarray = hits[:, :k].sum(1) / k
    return precision


def hit_at(hits: np.ndarray, k: int) -> np.ndarray:
    return np.asarray(hits[:, :k].any(1), dtype=np.float64)


def per_user(hits: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every metric at every K, per user: {"recall@20": (users,), ...}."""
    if (relevant < 1).any():
        raise ValueError("every evaluated user needs at least one relevant item")
    hits = hits.astype(np.float64)
    found: dict[str, np.ndarray] = {}
    for k in ks:
        found[f"recall@{k}"] = recall_at(hits, relevant, k)
        found[f"ndcg@{k}"] = ndcg_at(hits, relevant, k)
        found[f"precision@{k}"] = precision_at(hits, k)
        found[f"hit@{k}"] = hit_at(hits, k)
    return found


def mean_metrics(hits: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in per_user(hits, relevant, ks).items()}
