"""Full-ranking evaluation, batched over users: every item scored, the user's train items masked
(and, as an option at test time, the valid items as well), the top K taken with `torch.topk`.

The batches' scores are written into one buffer (`evaluate.batch_size` x items, on the model's
device): a fresh score matrix per batch costs more in page faults than the product itself. On a
CPU a batch is also kept to about `CPU_BATCH_BYTES` of scores, so that `topk` reads them from the
cache the product has just written them to (Games, all 25,372 users x 16,414 items: 1.02 s
against 1.30 s in batches of 4,096). The scores keep their bits whatever the batch size: every
product has at least `MIN_CPU_ROWS` rows (MKL computes a product of fewer than 16 rows with
other kernels, whose last bits differ), the last batch reaching back into the one before it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from neggen_core.config import EvaluateConfig
from neggen_core.data import TrainingData, contains
from neggen_core.evaluation.metrics import per_user
from neggen_core.models.base import Recommender

CPU_BATCH_BYTES = 8 << 20
MIN_CPU_ROWS = 64


@dataclass(frozen=True)
class Ranking:
    """The evaluated users, their top items with scores, and the metrics they give."""

    split: str
    users: np.ndarray  # (U,)
    items: np.ndarray  # (U, top)
    scores: np.ndarray  # (U, top)
    per_user: dict[str, np.ndarray]

    @property
    def metrics(self) -> dict[str, float]:
        return {name: float(values.mean()) for name, values in self.per_user.items()}


class Evaluator:
    def __init__(self, data: TrainingData, settings: EvaluateConfig):
        self.data = data
        self.settings = settings
        self._keys = {split: data.splits[split].keys(data.n_items) for split in ("valid", "test")}

    def cpu_rows(self, device: torch.device) -> int:
        """Users per batch that keep a CPU batch's scores within `CPU_BATCH_BYTES`."""
        if device.type != "cpu":
            return self.data.n_users
        return max(MIN_CPU_ROWS, CPU_BATCH_BYTES // (4 * self.data.n_items))

    def rank(self, model: Recommender, split: str, top: int | None = None) -> Ranking:
        """Rank every item for every user with at least one `split` item."""
        data, settings = self.data, self.settings
        masks = [data.splits["train"]]
        if split == "test" and settings.mask_valid_at_test:
            masks.append(data.splits["valid"])
        relevant = data.splits[split].counts
        users = np.flatnonzero(relevant > 0)
        depth = min(max(max(settings.ks), top or 0), data.n_items)
        items = np.empty((len(users), depth), dtype=np.int64)
        scores = np.empty((len(users), depth), dtype=np.float32)
        model.eval()
        size = max(1, min(settings.batch_size, len(users), self.cpu_rows(model.device)))
        buffer = torch.empty((size, data.n_items), device=model.device)
        with torch.no_grad():
            for start in range(0, len(users), size):
                start = min(start, len(users) - size)
                chunk = users[start : start + size]
                batch_scores = model.full_sort_predict(
                    model.as_tensor(chunk), out=buffer[: len(chunk)]
                )
                for mask in masks:
                    rows, masked = mask.gather(chunk)
                    flat = model.as_tensor(rows * data.n_items + masked)
                    batch_scores.view(-1).index_fill_(0, flat, -torch.inf)
                best, order = torch.topk(batch_scores, depth, dim=1)
                items[start : start + len(chunk)] = order.cpu().numpy()
                scores[start : start + len(chunk)] = best.cpu().numpy()
        hits = contains(
            self._keys[split], users[:, None], items[:, : max(settings.ks)], data.n_items
        )
        return Ranking(split, users, items, scores, per_user(hits, relevant[users], settings.ks))
