"""The model contract (as MMRec/RecBole): `calculate_loss(batch)` and `full_sort_predict(users)`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Batch:
    """One training batch, by name rather than as a positional tuple.

    users, positives: (B,) int64, the train interactions of the batch.
    negatives: (B,) int64 real negatives, or (B, M) a candidate pool that the model mixes with the
        positive hop by hop (MixGCF); then `mix` holds the (B, hops) mixing weights and
        `hop_scoring` says which user embedding scores each hop's mixed candidates.
    generated: (B,) int64 row of a generated negative of each positive, -1 where it has none.
    """

    users: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor
    mix: torch.Tensor | None = None
    hop_scoring: Literal["pooled", "per_hop"] = "pooled"
    generated: torch.Tensor | None = None


@dataclass(frozen=True)
class Losses:
    """The loss to minimise and its named parts (as floats, for the training log)."""

    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


def _moved(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """`fn` applied to a tensor, or to each tensor field of a dataclass (a copy)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if is_dataclass(value) and not isinstance(value, type):
        tensors = {f.name: getattr(value, f.name) for f in fields(value)}
        return replace(
            value, **{k: fn(v) for k, v in tensors.items() if isinstance(v, torch.Tensor)}
        )
    return value


class Recommender(nn.Module, ABC):
    """Base of every model: the scores of users for items, the loss of a batch.

    A model is built on the CPU (its seeded initialisation is the same everywhere) and moved
    with `.to(device)`; `held` names the attributes that hold tensors outside its parameters
    and buffers (a sparse graph, a dataclass of features), which move with it."""

    n_users: int
    n_items: int
    hops: int = 1  # embedding layers a MixGCF pool is mixed over
    held: tuple[str, ...] = ()

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        for name in self.held:
            setattr(self, name, _moved(getattr(self, name), fn))
        return self

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (the CPU for a model without any)."""
        for tensor in self.parameters():
            return tensor.device
        return torch.device("cpu")

    def as_tensor(self, array: np.ndarray) -> torch.Tensor:
        """A numpy array (indices, weights) as a tensor on the model's device."""
        return torch.from_numpy(array).to(self.device)

    @abstractmethod
    def calculate_loss(self, batch: Batch) -> Losses:
        """The batch's loss, a scalar tensor with its gradient, and its parts."""

    def pre_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch's batches (FREEDOM prunes its graph)."""

    @abstractmethod
    def full_sort_predict(
        self, users: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(len(users), n_items) scores of `users` (int64, (U,)) for every item, written into
        `out` where one is given (the evaluator reuses one buffer across its batches)."""

    @abstractmethod
    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """(B, M) scores of users (B,) for their candidate items (B, M), without gradient."""


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(positive - negative), averaged: softplus keeps it finite for any margin."""
    return nn.functional.softplus(negative - positive).mean()


def embedding_l2(*embeddings: torch.Tensor) -> torch.Tensor:
    """MMRec's EmbLoss: the sum of the tensors' L2 norms over the batch size."""
    total = sum(torch.linalg.vector_norm(e) for e in embeddings)
    assert isinstance(total, torch.Tensor)
    return total / embeddings[-1].shape[0]
