"""Multi-modal backbones, as MMRec implements them, on the items' modal features (the embeddings
stage's text vectors, and image features where items have them):

- VBPR (He and McAuley, AAAI 2016): MF whose item embedding is its ID embedding concatenated
  with a linear projection of its modal features; users are twice as wide.
- FREEDOM (Zhou and Shen, "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
  Multimodal Recommendation", ACM MM 2023):
  - a frozen item-item graph, built once: per modality, each item's `knn_k` nearest items by
    cosine (itself included, as MMRec's top-k), D^-1/2 A D^-1/2 with D the row sums; the image
    graph weighted `image_weight` and the text graph the rest (an item without an image keeps
    its text graph whole). Its propagation of the item ID embeddings is added to the items'
    LightGCN embeddings;
  - degree-sensitive pruning of the user-item graph before every epoch: `1 - dropout` of the
    train edges kept, drawn without replacement with probability proportional to
    1/sqrt(d_u d_i) (Efraimidis-Spirakis keys from a generator seeded by (seed, epoch), so a
    resumed run prunes as an uninterrupted one), renormalised on the kept degrees; ranking uses
    the whole graph;
  - `layers` LightGCN propagations (the mean over hops) and BPR on the fused representations,
    plus `reg_weight` times a BPR of the users against the items' projected modal features
    (the features themselves trainable, as MMRec's). No L2 term.

Both are `Backbone`s: their hop-by-hop embeddings (`layers()`) serve every real-negative sampler
and NegGen's causal module. FREEDOM's hops carry the item graph's term each (the mean over hops
then adds it once, as FREEDOM does), so MixGCF mixes the fused representations; with a MixGCF
pool, the modal BPR takes the pool's first (uniform) candidate as its negative.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from neggen_core.config import FreedomConfig
from neggen_core.data import MODALITIES
from neggen_core.encoders.index import IndexSettings, ItemIndex
from neggen_core.models.backbones import (
    Backbone,
    BatchEmbeddings,
    lightgcn_layers,
    normalized_adjacency,
    propagate,
    sparse_csr,
)
from neggen_core.models.base import Batch, bpr_loss


class VBPR(Backbone):
    """VBPR: an item is [ID embedding, W x_i + b] for its modal features x_i (every modality
    concatenated, zeros where an item lacks one); a user's embedding is as wide as both."""

    hops = 1
    features: torch.Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        reg_weight: float,
        seed: int,
        features: torch.Tensor,
    ):
        super().__init__(n_users, n_items, 2 * dim, reg_weight, seed, item_dim=dim)
        generator = torch.Generator().manual_seed(seed + 2)
        self.register_buffer("features", features.reshape(n_items, -1).float(), persistent=False)
        self.projection = nn.Linear(self.features.shape[1], dim)
        nn.init.xavier_normal_(self.projection.weight, generator=generator)
        nn.init.zeros_(self.projection.bias)

    def layers(self) -> tuple[torch.Tensor, torch.Tensor]:
        items = torch.cat([self.item_embedding, self.projection(self.features)], dim=-1)
        return self.user_embedding[None], items[None]


def knn_edges(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols): each row's `k` nearest rows by cosine, itself included (FAISS, exact up to
    `IndexSettings.exact_max_items` rows, HNSW past that)."""
    unit = _unit(vectors)
    _, neighbours = ItemIndex.build(unit, IndexSettings()).search(unit, min(k, len(unit)))
    rows = np.repeat(np.arange(len(unit)), neighbours.shape[1])
    cols = neighbours.reshape(-1)
    found = cols >= 0
    return rows[found], cols[found].astype(np.int64)


def symmetric_normalised(rows: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """The values of D^-1/2 A D^-1/2 on A's edges, D the row sums (MMRec's
    `compute_normalized_laplacian`)."""
    degree = np.bincount(rows, minlength=n).astype(np.float64) + 1e-7
    values: np.ndarray = degree[rows] ** -0.5 * degree[cols] ** -0.5
    return values


def graph_weights(names: Sequence[str], image_weight: float) -> np.ndarray:
    """Each modality's share of the item-item graph: the image's (its visual description's)
    `image_weight`, the text's the rest, the attribute text's none: the graph stays MMRec's,
    built from the text and the image."""
    share = {"text": 1.0 - image_weight, "visual": image_weight, "attributes": 0.0}
    return np.array([share[name] for name in names])


@dataclass(frozen=True)
class ItemGraph:
    """The frozen item-item graph (n_items square, sparse CSR) and its transpose."""

    matrix: torch.Tensor
    transpose: torch.Tensor

    @classmethod
    def build(
        cls,
        modal: np.ndarray,
        present: np.ndarray,
        k: int,
        image_weight: float,
        names: Sequence[str] = MODALITIES,
    ) -> ItemGraph:
        """From the items' modal features (n, M, D) and presence (n, M), the modalities
        `names` (text, visual, attributes; the first M where not given): each modality's kNN
        graph among the items that have it, weighted by `graph_weights`; an item without an
        image keeps its text graph whole (MMRec assumes every item has both)."""
        n = modal.shape[0]
        weight = graph_weights(names[: modal.shape[1]], image_weight)
        row_weight = present @ weight  # each item's total over the modalities it has
        rows, cols, values = [], [], []
        for m in range(modal.shape[1]):
            members = np.flatnonzero(present[:, m])
            if not len(members) or not weight[m]:
                continue
            r, c = knn_edges(modal[members, m], k)
            rows.append(members[r])
            cols.append(members[c])
            share = weight[m] / np.maximum(row_weight[members[r]], 1e-12)
            values.append(share * symmetric_normalised(r, c, len(members)))
        row, col = np.concatenate(rows), np.concatenate(cols)
        value = np.concatenate(values).astype(np.float32)
        return cls(_csr(row, col, value, n), _csr(col, row, value, n))


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    unit: np.ndarray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


@dataclass(frozen=True)
class VirtualNodes:
    """Rows of the item-item graph for vectors that are no item (generated negatives): each
    row's nearest real items per modality (G, K) and their weights, as a real item's row would
    weigh them (0 where a row has no such neighbour)."""

    neighbours: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def build(
        cls,
        item_modal: np.ndarray,
        item_present: np.ndarray,
        modal: np.ndarray,
        present: np.ndarray,
        k: int,
        image_weight: float,
        names: Sequence[str] = MODALITIES,
    ) -> VirtualNodes:
        """The rows of `modal` (G, M, D) with presence (G, M) among the items'."""
        weight = graph_weights(names[: modal.shape[1]], image_weight)
        row_weight = np.maximum(present @ weight, 1e-12)
        neighbours, weights = [], []
        for m in range(modal.shape[1]):
            members = np.flatnonzero(item_present[:, m])
            if not len(members) or not weight[m]:
                continue
            index = ItemIndex.build(_unit(item_modal[members, m]), IndexSettings())
            width = min(k, len(members))
            _, found = index.search(_unit(modal[:, m]), width)
            # a real item's row has `width` entries, each 1/sqrt(width * width) before its share
            share = np.where(present[:, m], weight[m] / row_weight, 0.0)[:, None] / width
            neighbours.append(members[np.maximum(found, 0)])
            weights.append(np.where(found >= 0, share, 0.0))
        return cls(
            torch.from_numpy(np.concatenate(neighbours, axis=1).astype(np.int64)),
            torch.from_numpy(np.concatenate(weights, axis=1).astype(np.float32)),
        )

    def term(self, rows: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        """(len(rows), d): rows' propagation of `embeddings` (n_items, d)."""
        return (self.weights[rows, :, None] * embeddings[self.neighbours[rows]]).sum(1)


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, n: int) -> torch.Tensor:
    matrix = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([rows, cols])),
        torch.from_numpy(values),
        (n, n),
        check_invariants=True,
    )
    return sparse_csr(matrix)


def edge_weights(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """1/sqrt(d_u d_i) of every train edge (u, i): how likely degree-sensitive pruning keeps it."""
    d_user = np.bincount(users).astype(np.float64) + 1e-7
    d_item = np.bincount(items).astype(np.float64) + 1e-7
    weights: np.ndarray = d_user[users] ** -0.5 * d_item[items] ** -0.5
    return weights


def kept_edges(weights: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    """`keep` edge positions, sorted, drawn without replacement with probability proportional
    to `weights` (Efraimidis-Spirakis: the smallest exponential keys over the weights)."""
    keys = rng.exponential(size=len(weights)) / weights
    kept: np.ndarray = np.sort(np.argpartition(keys, keep - 1)[:keep])
    return kept


class Freedom(Backbone):
    """FREEDOM; see the module docstring."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        seed: int,
        users: np.ndarray,
        items: np.ndarray,
        modal: torch.Tensor,
        present: torch.Tensor,
        settings: FreedomConfig,
        names: Sequence[str] = MODALITIES,
    ):
        super().__init__(n_users, n_items, dim, settings.reg_weight, seed)
        self.settings, self.seed = settings, seed
        self.names = tuple(names[: modal.shape[1]])
        self.n_layers = settings.layers
        self.hops = settings.layers + 1
        self.users, self.items = users, items
        self.full = normalized_adjacency(n_users, n_items, users, items)
        self.pruned = self.full
        self.held = ("full", "pruned", "graph")
        self.weights = edge_weights(users, items)
        self.keep = int(len(users) * (1.0 - settings.dropout))
        self.item_modal, self.item_present = modal.numpy(), present.numpy()
        self.graph = ItemGraph.build(
            self.item_modal, self.item_present, settings.knn_k, settings.image_weight, self.names
        )
        generator = torch.Generator().manual_seed(seed + 2)
        self.modalities = [m for m in range(modal.shape[1]) if bool(present[:, m].any())]
        self.modal = nn.ParameterList(nn.Parameter(modal[:, m].clone()) for m in self.modalities)
        self.projections = nn.ModuleList(nn.Linear(modal.shape[2], dim) for _ in self.modalities)
        for projection in self.projections:
            assert isinstance(projection, nn.Linear)
            nn.init.xavier_uniform_(projection.weight, generator=generator)
            nn.init.zeros_(projection.bias)

    def pre_epoch(self, epoch: int) -> None:
        """Prune the user-item graph for this epoch (seeded by (seed, epoch))."""
        if self.settings.dropout == 0 or self.keep == 0:
            self.pruned = self.full
            return
        kept = kept_edges(self.weights, self.keep, np.random.default_rng([self.seed, epoch, 7]))
        self.pruned = normalized_adjacency(
            self.n_users, self.n_items, self.users[kept], self.items[kept]
        ).to(self.device)

    def graph_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_items, d) twice: the item ID embeddings propagated over the item-item graph one
        layer short of `item_graph_layers` (what a virtual node's row propagates), and all of
        them (FREEDOM's term)."""
        before: torch.Tensor = self.item_embedding
        for _ in range(self.settings.item_graph_layers - 1):
            before = propagate(self.graph.matrix, before, self.graph.transpose)
        return before, propagate(self.graph.matrix, before, self.graph.transpose)

    def virtual_nodes(self, modal: np.ndarray, present: np.ndarray) -> VirtualNodes:
        """Vectors that are no item (G, M, D), with presence (G, M), as item-graph rows."""
        k, weight = self.settings.knn_k, self.settings.image_weight
        return VirtualNodes.build(
            self.item_modal, self.item_present, modal, present, k, weight, self.names
        )

    def layers(self) -> tuple[torch.Tensor, torch.Tensor]:
        adjacency = self.pruned if self.training else self.full
        ego = torch.cat([self.user_embedding, self.item_embedding])
        everything = lightgcn_layers(adjacency, ego, self.n_layers)
        _, graph = self.graph_terms()
        return everything[:, : self.n_users], everything[:, self.n_users :] + graph[None]

    def embed_batch(
        self, batch: Batch, user_layers: torch.Tensor, item_layers: torch.Tensor
    ) -> BatchEmbeddings:
        """The fused embeddings, and as the regulariser the modal BPR (no L2 term)."""
        embedded = super().embed_batch(batch, user_layers, item_layers)
        return replace(embedded, reg=self.modal_bpr(batch, embedded.user))

    def modal_bpr(self, batch: Batch, user: torch.Tensor) -> torch.Tensor:
        """The sum over modalities of the BPR of `user` (the batch's final user embeddings)
        against the positives' and negatives' projected modal features; 0 (not computed) when
        its weight is 0."""
        if self.reg_weight == 0:
            return torch.zeros((), device=user.device)
        negatives = batch.negatives if batch.negatives.ndim == 1 else batch.negatives[:, 0]
        total = torch.zeros((), device=user.device)
        for modal, projection in zip(self.modal, self.projections, strict=True):
            positive = (user * projection(modal[batch.positives])).sum(-1)
            negative = (user * projection(modal[negatives])).sum(-1)
            total = total + bpr_loss(positive, negative)
        return total
