"""The trainer: Adam, seeded batches, valid Recall@20 every epoch, early stopping, the best state
kept, a checkpoint after every epoch from which a killed run resumes exactly.

Every epoch draws from its own generator, seeded by (seed, epoch): an epoch replayed after a
resume shuffles and samples exactly as it did, so a resumed run ends where an uninterrupted one
does. Nothing here looks at the test split.

Each positive's generated negative (NegGen) is chosen per user (`train.neggen.negative_choice:
per_user`): among the positive's negatives, those whose new values the user never chose for that
attribute in the positive's category (train), and of those the one the model currently scores
highest (DNS over the generated set, `NegGen.negative_scores`). A pair whose positive has
negatives but none the user may be given draws one uniformly; the share of such pairs is the
training log's `generated_fallback_share`. `uniform` draws every one uniformly (the control).

A run's result does not depend on how many threads torch has (so a comparison on one worker with
two threads equals one on two workers with one thread each): training uses torch's deterministic
kernels (CPU advanced-index gradients otherwise add in thread order), MKL runs in its strict
reproducibility mode (`neggen_core/__init__.py`), and the models avoid matrix-vector products,
whose gradient MKL does not keep reproducible.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from neggen_core.config import TrainConfig
from neggen_core.data import ItemFeatures, NegativeChoices, TrainingData
from neggen_core.errors import TrainingError
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.models.backbones import Layers
from neggen_core.models.base import Recommender
from neggen_core.models.neggen import NegGen
from neggen_core.models.samplers import Sampler
from neggen_core.train.contract import load_state

SELECTION_METRIC = "recall@20"
LOSS_PARTS = ("bpr", "generated", "alignment", "reg")


class Checkpoints(Protocol):
    """Where the trainer keeps its one resumable checkpoint."""

    def load(self) -> bytes | None: ...

    def save(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    best_state: dict[str, torch.Tensor]
    log: list[dict[str, Any]]
    stopped_early: bool


def generated_rows(
    features: ItemFeatures, positives: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One generated negative of each positive, uniformly among its own; -1 where it has none."""
    start = features.negative_indptr[positives]
    count = features.negative_indptr[positives + 1] - start
    pick = start + np.floor(rng.random(len(positives)) * count).astype(np.int64)
    return np.where(count > 0, pick, -1)


@dataclass(frozen=True)
class GeneratedChoice:
    """The generated negative chosen for each pair of a batch (-1 where its positive has
    none), how many pairs had one to choose from and how many of those fell back to a uniform
    draw (no negative the user may be given)."""

    rows: np.ndarray
    with_negatives: int
    fallbacks: int


def chosen_rows(
    model: NegGen,
    choices: NegativeChoices,
    users: np.ndarray,
    positives: np.ndarray,
    rng: np.random.Generator,
    layers: Layers | None = None,
) -> GeneratedChoice:
    """Per pair, the highest-scored of the positive's generated negatives that the user may be
    given (`NegativeChoices.eligible`); a uniform draw (`generated_rows`, drawn for every pair
    so that the generator advances as under `uniform`) where there is none. `layers`: the
    backbone's layers of this step, when the loss will use the same (one propagation)."""
    uniform = generated_rows(model.features, positives, rng)
    candidates = model.features.candidates(positives)
    eligible = choices.eligible(users, positives, candidates)
    chosen = eligible.any(1)
    rows = uniform.copy()
    if chosen.any():
        pool = np.where(eligible[chosen], candidates[chosen], -1)
        scores = model.negative_scores(
            model.as_tensor(users[chosen]), model.as_tensor(pool), layers
        )
        rows[chosen] = pool[np.arange(len(pool)), scores.argmax(1).cpu().numpy()]
    with_negatives = int((uniform >= 0).sum())
    return GeneratedChoice(rows, with_negatives, with_negatives - int(chosen.sum()))


def _serialise(payload: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's `state_dict` on the CPU: what a checkpoint and `model.pt` hold,
    whatever the device trained on, so that any machine loads them."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def fit(
    model: Recommender,
    sampler: Sampler,
    data: TrainingData,
    evaluator: Evaluator,
    settings: TrainConfig,
    checkpoints: Checkpoints | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train until valid Recall@20 has not improved for `patience` epochs (or `epochs` ran)."""
    # process-wide, and left on: see the docstring; a GPU has no deterministic kernel for
    # every operation used here (sparse products), and a run there is not bit-reproducible
    torch.use_deterministic_algorithms(True, warn_only=model.device.type != "cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    log: list[dict[str, Any]] = []
    first_epoch, best_epoch, best_value, bad_epochs = 0, -1, -1.0, 0
    best_valid: dict[str, float] = {}
    best_state = cpu_state(model)
    saved = checkpoints.load() if checkpoints is not None else None
    if saved is not None:
        state = load_state(saved)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_epoch, best_epoch = int(state["epoch"]) + 1, int(state["best_epoch"])
        best_value, bad_epochs = float(state["best_value"]), int(state["bad_epochs"])
        best_valid, best_state, log = state["best_valid"], state["best_state"], state["log"]

    generated = isinstance(model, NegGen) and model.uses_generated
    per_user = generated and settings.neggen.negative_choice == "per_user"
    if per_user and data.choices is None:
        raise TrainingError(
            "train.neggen.negative_choice per_user needs the negatives' interventions and the "
            "items' attributes (train.contract.load_training_data with choices=True), or set it "
            "to uniform"
        )
    n_train = len(data.train_users)
    stopped_early = bad_epochs >= settings.patience
    for epoch in range(first_epoch, settings.epochs):
        if stopped_early:
            break
        began = time.perf_counter()
        rng = np.random.default_rng([settings.seed, epoch])
        order = rng.permutation(n_train)
        model.train()
        model.pre_epoch(epoch)
        sums = dict.fromkeys(("loss", *LOSS_PARTS), 0.0)
        seen = dict.fromkeys(sums, 0)
        with_negatives, fallbacks = 0, 0
        for start in range(0, n_train, settings.batch_size):
            rows = order[start : start + settings.batch_size]
            users, positives = data.train_users[rows], data.train_items[rows]
            batch = sampler.sample(model, users, positives, rng)
            layers = None
            if generated:
                assert isinstance(model, NegGen)
                if per_user:
                    assert data.choices is not None
                    # one propagation serves the choice (read without its graph) and the loss
                    layers = model.backbone.layers()
                    choice = chosen_rows(model, data.choices, users, positives, rng, layers)
                    picked = choice.rows
                    with_negatives += choice.with_negatives
                    fallbacks += choice.fallbacks
                else:
                    picked = generated_rows(model.features, positives, rng)
                batch = replace(batch, generated=model.as_tensor(picked))
            if isinstance(model, NegGen):
                losses = model.calculate_loss(batch, layers)
            else:
                losses = model.calculate_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(losses.total)  # as Tensor.backward, which torch leaves untyped
            optimizer.step()
            for name, value in {"loss": losses.total.item(), **losses.parts}.items():
                sums[name] += value * len(rows)
                seen[name] += len(rows)
        train_seconds = time.perf_counter() - began

        began = time.perf_counter()
        valid = evaluator.rank(model, "valid").metrics
        eval_seconds = time.perf_counter() - began
        improved = valid[SELECTION_METRIC] > best_value
        if improved:
            best_epoch, best_value, bad_epochs = epoch, valid[SELECTION_METRIC], 0
            best_valid = valid
            best_state = cpu_state(model)
        else:
            bad_epochs += 1
        row: dict[str, Any] = {
            "epoch": epoch,
            **{
                (name if name == "loss" else f"{name}_loss"): (
                    sums[name] / seen[name] if seen[name] else None
                )
                for name in sums
            },
            "generated_fallback_share": (
                fallbacks / with_negatives if per_user and with_negatives else None
            ),
            "valid_recall_20": valid["recall@20"],
            "valid_ndcg_20": valid["ndcg@20"],
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            "improved": improved,
        }
        log.append(row)
        stopped_early = bad_epochs >= settings.patience
        if checkpoints is not None:
            checkpoints.save(
                _serialise(
                    {
                        "model": cpu_state(model),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                        "best_epoch": best_epoch,
                        "best_value": best_value,
                        "best_valid": best_valid,
                        "bad_epochs": bad_epochs,
                        "best_state": best_state,
                        "log": log,
                    }
                )
            )
        if on_epoch is not None:
            on_epoch(row)
    model.load_state_dict(best_state)
    return FitResult(best_epoch, best_valid, best_state, log, stopped_early)
