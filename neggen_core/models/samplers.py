"""Real-item negative samplers, vectorised over the batch (no per-user Python loop):

- RNS: uniform over the items the user has not interacted with in train.
- DNS (Zhang et al., SIGIR 2013): the highest-scored of a uniform candidate pool.
- MixGCF (Huang et al., KDD 2021): a uniform pool that the model mixes with the positive hop by
  hop (positive mixing) and picks from per hop (hop mixing), each hop's candidates scored against
  the user's final (pooled) embedding as huangtinglin/MixGCF does; see `Backbone.embed_batch`.
- AHNS (Lai et al., AAAI 2024): the candidate whose score is nearest to the adaptive hardness
  target beta * (s_pos + alpha)^(p + 1): a harder negative for a lower-scored positive.

Uniform candidates are drawn by rejection: draw, test all pairs against the sorted train keys at
once, redraw only the pairs that hit, until none does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

from neggen_core.config import AhnsConfig
from neggen_core.data import TrainingData
from neggen_core.errors import TrainingError
from neggen_core.models.base import Batch, Recommender

MAX_REDRAWS = 1000


def uniform_candidates(
    data: TrainingData, users: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """(len(users), size) items drawn uniformly among those each user has not trained on."""
    candidates = rng.integers(0, data.n_items, size=(len(users), size))
    rows = np.broadcast_to(users[:, None], candidates.shape)
    bad = data.interacted(rows, candidates)
    for _ in range(MAX_REDRAWS):
        if not bad.any():
            return candidates
        candidates[bad] = rng.integers(0, data.n_items, size=int(bad.sum()))
        bad[bad] = data.interacted(rows[bad], candidates[bad])
    stuck = np.unique(rows[bad])[:5].tolist()
    raise TrainingError(
        f"users {stuck} have almost no item they have not interacted with; "
        f"no negative found after {MAX_REDRAWS} draws"
    )


class Sampler(Protocol):
    @property
    def name(self) -> str: ...

    def sample(
        self,
        model: Recommender,
        users: np.ndarray,
        positives: np.ndarray,
        rng: np.random.Generator,
    ) -> Batch: ...


def _chosen(pool: np.ndarray, column: torch.Tensor) -> np.ndarray:
    """Row r's item at `column[r]` of the pool."""
    chosen: np.ndarray = pool[np.arange(len(pool)), column.cpu().numpy()]
    return chosen


def _batch(
    model: Recommender, users: np.ndarray, positives: np.ndarray, negatives: np.ndarray
) -> Batch:
    """The batch, on the model's device."""
    return Batch(
        users=model.as_tensor(users),
        positives=model.as_tensor(positives),
        negatives=model.as_tensor(negatives),
    )


@dataclass(frozen=True)
class RNS:
    data: TrainingData
    name: str = "rns"

    def sample(
        self, model: Recommender, users: np.ndarray, positives: np.ndarray, rng: np.random.Generator
    ) -> Batch:
        return _batch(model, users, positives, uniform_candidates(self.data, users, 1, rng)[:, 0])


@dataclass(frozen=True)
class DNS:
    data: TrainingData
    pool: int
    name: str = "dns"

    def sample(
        self, model: Recommender, users: np.ndarray, positives: np.ndarray, rng: np.random.Generator
    ) -> Batch:
        pool = uniform_candidates(self.data, users, self.pool, rng)
        scores = model.score_candidates(model.as_tensor(users), model.as_tensor(pool))
        return _batch(model, users, positives, _chosen(pool, scores.argmax(dim=1)))


@dataclass(frozen=True)
class AHNS:
    data: TrainingData
    settings: AhnsConfig
    name: str = "ahns"

    def sample(
        self, model: Recommender, users: np.ndarray, positives: np.ndarray, rng: np.random.Generator
    ) -> Batch:
        pool = uniform_candidates(self.data, users, self.settings.pool, rng)
        user_tensor = model.as_tensor(users)
        scores = model.score_candidates(user_tensor, model.as_tensor(pool))
        positive = model.score_candidates(user_tensor, model.as_tensor(positives[:, None]))
        # the base is kept positive so that a fractional exponent stays real
        base = (positive + self.settings.alpha).clamp_min(1e-6)
        target = self.settings.beta * base.pow(self.settings.p + 1)
        chosen = _chosen(pool, (scores - target).abs().argmin(dim=1))
        return _batch(model, users, positives, chosen)


@dataclass(frozen=True)
class MixGCF:
    data: TrainingData
    pool: int
    hop_scoring: Literal["pooled", "per_hop"] = "pooled"
    name: str = "mixgcf"

    def sample(
        self, model: Recommender, users: np.ndarray, positives: np.ndarray, rng: np.random.Generator
    ) -> Batch:
        pool = uniform_candidates(self.data, users, self.pool, rng)
        mix = rng.random((len(users), model.hops), dtype=np.float32)
        return Batch(
            users=model.as_tensor(users),
            positives=model.as_tensor(positives),
            negatives=model.as_tensor(pool),
            mix=model.as_tensor(mix),
            hop_scoring=self.hop_scoring,
        )
