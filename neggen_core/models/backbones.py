"""Collaborative backbones: MF (BPR-MF, Rendle et al., UAI 2009) and LightGCN (He et al., SIGIR
2020), as MMRec implements them (the multi-modal VBPR and FREEDOM build on them:
`neggen_core/models/multimodal.py`): Xavier-initialised ego embeddings, BPR loss, and MMRec's
`EmbLoss` (L2 norms of the batch's ego embeddings over the batch size) times `reg_weight`.

Both expose their embeddings layer by layer (`layers()`: (hops, n, d), hop 0 the ego embeddings;
the final embedding is the mean over hops), which is what MixGCF mixes.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from neggen_core.models.base import Batch, Losses, Recommender, bpr_loss, embedding_l2

Layers = tuple[torch.Tensor, torch.Tensor]
"""A backbone's (hops, n_users, d) and (hops, n_items, d) embeddings."""


@dataclass(frozen=True)
class BatchEmbeddings:
    """Final embeddings of a batch's users, positives and negatives (B, d), and the L2 term."""

    user: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    reg: torch.Tensor


def normalized_adjacency(
    n_users: int, n_items: int, users: np.ndarray, items: np.ndarray
) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of the user-item bipartite graph, (n_users + n_items) square, sparse CSR."""
    rows = np.concatenate([users, items + n_users])
    cols = np.concatenate([items + n_users, users])
    degree = np.bincount(rows, minlength=n_users + n_items).astype(np.float64) + 1e-7
    values = (degree[rows] ** -0.5) * (degree[cols] ** -0.5)
    size = n_users + n_items
    matrix = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, cols])),
        torch.from_numpy(values.astype(np.float32)),
        (size, size),
        check_invariants=True,
    )
    return sparse_csr(matrix)


def sparse_csr(matrix: torch.Tensor) -> torch.Tensor:
    """A sparse COO matrix as CSR, without torch's "CSR support is in beta" warning on every run
    (the one operation used on it, a sparse-dense product, is covered by the tests)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta", UserWarning)
        return matrix.coalesce().to_sparse_csr()


class _Propagate(torch.autograd.Function):
    """A @ x with A's transpose given (A itself when symmetric, as the normalised adjacency):
    the gradient is A^T @ grad, so autograd need not transpose A (a sort of its indices) at
    every step."""

    @staticmethod
    def forward(
        ctx: Any, adjacency: torch.Tensor, transpose: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        ctx.transpose = transpose
        return adjacency @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, ctx.transpose @ grad.contiguous()


def propagate(
    adjacency: torch.Tensor, x: torch.Tensor, transpose: torch.Tensor | None = None
) -> torch.Tensor:
    """adjacency @ x; `transpose` is adjacency's transpose (default: adjacency, symmetric)."""
    out: torch.Tensor = _Propagate.apply(  # type: ignore[no-untyped-call]
        adjacency, adjacency if transpose is None else transpose, x
    )
    return out


def lightgcn_layers(adjacency: torch.Tensor, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """(n_layers + 1, n, d): the ego embeddings and each propagation over `adjacency`."""
    stacked = [ego]
    for _ in range(n_layers):
        stacked.append(propagate(adjacency, stacked[-1]))
    return torch.stack(stacked)


class Backbone(Recommender):
    """Shared by every backbone: ego embeddings, the batch's BPR, scoring. `dim` is the width
    of the final embeddings that score (VBPR's item ego embeddings are `item_dim` wide, its
    visual part the rest)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        reg_weight: float,
        seed: int,
        item_dim: int | None = None,
    ):
        super().__init__()
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        self.reg_weight = reg_weight
        generator = torch.Generator().manual_seed(seed)
        self.user_embedding = nn.Parameter(torch.empty(n_users, dim))
        self.item_embedding = nn.Parameter(torch.empty(n_items, item_dim or dim))
        nn.init.xavier_uniform_(self.user_embedding, generator=generator)
        nn.init.xavier_uniform_(self.item_embedding, generator=generator)
        self._final: tuple[torch.Tensor, torch.Tensor] | None = None

    @abstractmethod
    def layers(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(hops, n_users, d) and (hops, n_items, d) embeddings, hop 0 the ego embeddings."""

    def train(self, mode: bool = True) -> Backbone:
        self._final = None
        return super().train(mode)

    def final_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_users, d), (n_items, d): the mean over hops; cached while in eval mode."""
        if self.training or self._final is None:
            users, items = self.layers()
            final = (users.mean(0), items.mean(0))
            if self.training:
                return final
            self._final = (final[0].detach(), final[1].detach())
        return self._final

    def embed_batch(
        self, batch: Batch, user_layers: torch.Tensor, item_layers: torch.Tensor
    ) -> BatchEmbeddings:
        """The batch's final embeddings; a (B, M) negative pool is mixed hop by hop (MixGCF:
        each hop's negative is the pool member, mixed with the positive, that scores highest
        against the user's final embedding, as the official implementation does; with
        `batch.hop_scoring == "per_hop"`, against the user's embedding of that hop)."""
        users = user_layers[:, batch.users]
        positives = item_layers[:, batch.positives]
        if batch.negatives.ndim == 1:
            negatives = item_layers[:, batch.negatives]
        else:
            if batch.mix is None:
                raise ValueError("a negative pool needs mixing weights (batch.mix)")
            pool = item_layers[:, batch.negatives]  # (hops, B, M, d)
            weight = batch.mix.T[:, :, None, None]  # (hops, B, 1, 1)
            mixed = weight * positives[:, :, None, :] + (1 - weight) * pool
            scorer = users if batch.hop_scoring == "per_hop" else users.mean(0, keepdim=True)
            scores = (scorer[:, :, None, :] * mixed).sum(-1)  # (hops, B, M)
            best = scores.argmax(dim=2)[:, :, None, None].expand(-1, -1, 1, mixed.shape[-1])
            negatives = mixed.gather(2, best).squeeze(2)  # (hops, B, d)
        return BatchEmbeddings(
            user=users.mean(0),
            positive=positives.mean(0),
            negative=negatives.mean(0),
            reg=embedding_l2(users[0], positives[0], negatives[0]),
        )

    def calculate_loss(self, batch: Batch) -> Losses:
        user_layers, item_layers = self.layers()
        embedded = self.embed_batch(batch, user_layers, item_layers)
        bpr = bpr_loss(
            (embedded.user * embedded.positive).sum(-1),
            (embedded.user * embedded.negative).sum(-1),
        )
        total = bpr + self.reg_weight * embedded.reg
        return Losses(total, {"bpr": bpr.item(), "reg": embedded.reg.item()})

    def full_sort_predict(
        self, users: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        user_final, item_final = self.final_embeddings()
        return torch.mm(user_final[users], item_final.T, out=out)

    @torch.no_grad()
    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        user_layers, item_layers = self.layers()
        user_final, item_final = user_layers.mean(0), item_layers.mean(0)
        return (user_final[users][:, None, :] * item_final[items]).sum(-1)


class MF(Backbone):
    """Matrix factorisation: the ego embeddings are the final ones (one hop)."""

    hops = 1

    def layers(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_embedding[None], self.item_embedding[None]


class LightGCN(Backbone):
    """LightGCN: `n_layers` propagations over the normalised adjacency, mean over the layers."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        reg_weight: float,
        seed: int,
        adjacency: torch.Tensor,
        n_layers: int,
    ):
        super().__init__(n_users, n_items, dim, reg_weight, seed)
        self.adjacency = adjacency
        self.held = ("adjacency",)
        self.n_layers = n_layers
        self.hops = n_layers + 1

    def layers(self) -> tuple[torch.Tensor, torch.Tensor]:
        ego = torch.cat([self.user_embedding, self.item_embedding])
        everything = lightgcn_layers(self.adjacency, ego, self.n_layers)
        return everything[:, : self.n_users], everything[:, self.n_users :]
