"""NegGen's mechanism at work: the reverse effect of a generated negative, gradients into every
parameter of A and P from the first step, a generated loss that learns (not log 2), and the
per-user choice of a positive's generated negative (eligible first, then the hardest)."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import numpy as np
import pytest
import torch

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import EvaluateConfig, NegGenSettings, TrainConfig, load_config
from neggen_core.data import ItemFeatures, NegativeChoices, TrainingData
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.models.backbones import MF
from neggen_core.models.base import Batch
from neggen_core.models.neggen import NegGen
from neggen_core.models.registry import build_model, build_sampler
from neggen_core.pipeline.stages import open_store
from neggen_core.train.compute import chosen_rows, fit, generated_rows
from neggen_core.train.contract import load_training_data
from tests.support.helpers import DEMO_SETTINGS

GRADIENT_BOUND = 50.0  # the frozen-P defect measured 5.4e6 on the output layer at step 0


def _features(per_item: int = 1, n_items: int = 6, modalities: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    items = rng.normal(size=(n_items, modalities, 8)).astype(np.float32)
    owner = np.repeat(np.arange(n_items), per_item)
    shift = rng.normal(scale=0.3, size=(len(owner), modalities, 8)).astype(np.float32)
    present = np.ones((n_items, modalities), dtype=bool)
    ids = np.array([f"n{g}" for g in range(len(owner))])
    return ItemFeatures.build(items, present, items[owner] + shift, present[owner], owner, ids)


def _neggen(features: ItemFeatures, **settings: float | str) -> NegGen:
    backbone = MF(5, len(features.item_modal), dim=4, reg_weight=0.0, seed=0)
    return NegGen(backbone, features, NegGenSettings(**settings), seed=0)


@pytest.mark.parametrize("max_norm", [1.0, 1e-3])
def test_a_generated_negative_carries_the_reverse_effect(max_norm: float) -> None:
    """P is odd: c(i-) = -c(i) exactly (also where the cap bites), and c(i) is the effect of the
    positive against its negative, P(A(m(i) - m(i-))), not the other way round."""
    features = _features(per_item=1)
    model = _neggen(features, effect_max_norm=max_norm)
    effects = model.effects(torch.arange(6))
    assert effects.positive.abs().min() > 0
    assert torch.equal(effects.negative, -effects.positive)
    items = features.item_modal[features.negative_owner]
    weights = model._weights(items, features.item_present)
    by_hand = model.effect(
        model.attention.pool(
            model.attention.project(items - features.negative_modal, bias=False), weights
        )
    )
    assert torch.equal(effects.positive, by_hand)


def test_the_negative_is_scored_as_its_positive_moved_by_the_reverse_effect() -> None:
    """s(u, i) - s(u, i-) = lambda <u, c(i)>: a user whose embedding points along the positive's
    key-feature effect prefers the positive to its generated negative."""
    features = _features(per_item=2)
    model = _neggen(features, effect_weight=0.5, alignment_weight=0.0)
    rows = torch.arange(12)
    owner = features.negative_owner
    effects = model.effects(rows)
    with torch.no_grad():
        model.backbone.user_embedding.zero_()
        model.backbone.user_embedding[: len(rows) // 4] = effects.positive[: len(rows) // 4]
    users = torch.arange(len(rows)) % 5
    batch = Batch(users, owner, (owner + 1) % 6, generated=rows)
    losses = model.calculate_loss(batch)
    margin = 0.5 * (model.backbone.user_embedding[users] * effects.positive).sum(-1).detach()
    expected = torch.nn.functional.softplus(-margin).mean().detach()
    assert losses.parts["generated"] == pytest.approx(float(expected), rel=1e-5)
    assert float(margin[:3].min()) > 0  # those users point along c(i): the positive wins


def test_the_effect_is_capped() -> None:
    features = _features(per_item=2)
    loose = _neggen(features, effect_max_norm=100.0).effects(torch.arange(12))
    capped = _neggen(features, effect_max_norm=1e-4).effects(torch.arange(12))
    norms = torch.linalg.vector_norm(capped.positive, dim=1)
    torch.testing.assert_close(norms, torch.full_like(norms, 1e-4))
    # the cap rescales each row: the directions are unchanged
    torch.testing.assert_close(
        torch.nn.functional.normalize(capped.negative, dim=1),
        torch.nn.functional.normalize(loose.negative, dim=1),
    )


def _choices(features: ItemFeatures, chosen: list[tuple[int, int]]) -> NegativeChoices:
    """One category; generated negative g changes to value g; user u chose the values of
    `chosen` (u, value)."""
    keys = np.array(sorted(u * features.generated + v for u, v in chosen), dtype=np.int64)
    values = np.arange(features.generated, dtype=np.int64)[:, None]
    n_items = len(features.item_modal)
    return NegativeChoices(np.zeros(n_items, dtype=np.int64), values, keys, 1, features.generated)


def _harder_second(model: NegGen, user: int) -> None:
    """Point `user` so that the model scores item 0's second negative above its first."""
    scores = model.negative_scores(torch.tensor([user]), torch.tensor([[0, 1]]))
    if scores[0, 1] < scores[0, 0]:
        with torch.no_grad():
            model.backbone.user_embedding[user].neg_()
    scores = model.negative_scores(torch.tensor([user]), torch.tensor([[0, 1]]))
    assert scores[0, 1] > scores[0, 0]


@pytest.mark.parametrize("ablation", ["none", "no_causal"])
def test_the_hardest_negative_is_scored_as_the_generated_bpr_scores_it(ablation: str) -> None:
    """`negative_scores` is s(u, i-) as the generated BPR uses it: the loss of a batch is the
    mean of softplus(s(u, i-) - s(u, i)); a padding row (-1) scores -inf."""
    features = _features(per_item=2)
    model = _neggen(features, ablation=ablation)
    users, positives, rows = (
        torch.tensor([0, 3]),
        torch.tensor([0, 4]),
        torch.tensor([[0, 1], [8, 9]]),
    )
    scores = model.negative_scores(users, rows)
    positive = model.score_candidates(users, positives[:, None])[:, 0]
    for k in range(2):
        batch = Batch(users, positives, (positives + 1) % 6, generated=rows[:, k])
        expected = torch.nn.functional.softplus(scores[:, k] - positive).mean()
        losses = model.calculate_loss(batch)
        assert losses.parts["generated"] == pytest.approx(float(expected), rel=1e-5)
    padded = model.negative_scores(users, torch.tensor([[0, -1], [8, 9]]))
    assert padded[0, 1] == float("-inf")
    torch.testing.assert_close(padded[1], scores[1])


def test_an_eligible_negative_is_chosen_over_a_harder_one_the_user_chose() -> None:
    """User 1 chose the second negative's new value in the category: the first is given,
    although the model scores the second higher."""
    features = _features(per_item=2)
    model = _neggen(features)
    _harder_second(model, user=1)
    choice = chosen_rows(
        model, _choices(features, [(1, 1)]), np.array([1]), np.array([0]), np.random.default_rng(0)
    )
    assert choice.rows.tolist() == [0]
    assert (choice.with_negatives, choice.fallbacks) == (1, 0)


def test_among_the_eligible_the_highest_scored_is_chosen() -> None:
    """Both of item 0's negatives are eligible: the one the model scores higher is given, and
    the other once the user's embedding points the other way."""
    features = _features(per_item=2)
    model = _neggen(features)
    _harder_second(model, user=1)
    choices = _choices(features, [(2, 0), (2, 1)])  # another user's choices do not count
    users, positives = np.full(20, 1), np.zeros(20, dtype=np.int64)
    choice = chosen_rows(model, choices, users, positives, np.random.default_rng(0))
    assert choice.rows.tolist() == [1] * 20
    with torch.no_grad():
        model.backbone.user_embedding[1].neg_()
    choice = chosen_rows(model, choices, users, positives, np.random.default_rng(0))
    assert choice.rows.tolist() == [0] * 20 and choice.fallbacks == 0


def test_with_no_eligible_negative_a_uniform_draw_is_given_and_counted() -> None:
    """User 1 chose both of item 0's new values: its pairs with item 0 draw uniformly (as
    `generated_rows`, from the same generator state) and are counted; its pair with item 2
    (value 4 and 5, not chosen) is not."""
    features = _features(per_item=2)
    model = _neggen(features)
    choices = _choices(features, [(1, 0), (1, 1)])
    users, positives = np.full(40, 1), np.array([0] * 39 + [2])
    choice = chosen_rows(model, choices, users, positives, np.random.default_rng(5))
    uniform = generated_rows(features, positives, np.random.default_rng(5))
    assert choice.rows[:39].tolist() == uniform[:39].tolist()
    assert set(choice.rows[:39].tolist()) == {0, 1}  # a draw, not the hardest every time
    assert choice.rows[39] in (4, 5)
    assert (choice.with_negatives, choice.fallbacks) == (40, 39)


@pytest.fixture(scope="module")
def demo(demo_built: tuple[str, dict[str, ArtifactRef]]) -> tuple[TrainConfig, TrainingData]:
    """The demo's training data with its features (text and visual description)."""
    root, refs = demo_built
    config = load_config(None, [f"artifacts.root={root}", *DEMO_SETTINGS])
    data = load_training_data(open_store(config), refs["ingest"], refs["embeddings"])
    assert data.features is not None and data.features.modalities == 2
    return config.train, data


def _batch(model: NegGen, settings: TrainConfig, data: TrainingData, step: int):
    rng = np.random.default_rng([settings.seed, step])
    rows = rng.choice(len(data.train_users), 512, replace=False)
    users, positives = data.train_users[rows], data.train_items[rows]
    batch = build_sampler(settings, data).sample(model, users, positives, rng)
    assert data.features is not None
    picked = generated_rows(data.features, positives, rng)
    return replace(batch, generated=torch.from_numpy(picked))


def _content_gradients(model: NegGen) -> dict[str, float]:
    named = [*model.attention.named_parameters("A"), *model.effect.named_parameters("P")]
    norms = {}
    for name, parameter in named:
        assert parameter.grad is not None, f"{name} has no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        norms[name] = float(torch.linalg.vector_norm(parameter.grad))
    return norms


def test_every_parameter_of_a_and_p_learns_from_the_first_step(
    demo: tuple[TrainConfig, TrainingData],
) -> None:
    settings, data = demo
    model = build_model(settings, data)
    assert isinstance(model, NegGen)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    for step in range(11):
        model.train()
        optimizer.zero_grad(set_to_none=True)
        model.calculate_loss(_batch(model, settings, data, step)).total.backward()
        if step in (0, 10):
            norms = _content_gradients(model)
            assert min(norms.values()) > 0, (step, norms)
            assert max(norms.values()) < GRADIENT_BOUND, (step, norms)
        optimizer.step()


def test_the_generated_loss_learns_and_moves_p_every_epoch(
    demo: tuple[TrainConfig, TrainingData],
) -> None:
    """Over a few epochs: P's output layer moves every epoch, the generated loss falls every
    epoch away from log 2, and the generated BPR margin lambda <u, c(i) - c(i-)> is not zero."""
    settings, data = demo
    settings = settings.model_copy(update={"epochs": 8, "patience": 10, "learning_rate": 0.005})
    model = build_model(settings, data)
    assert isinstance(model, NegGen)
    snapshots = [model.effect.out.weight.detach().clone()]

    def snapshot(row: dict[str, object]) -> None:
        snapshots.append(model.effect.out.weight.detach().clone())

    evaluator = Evaluator(data, EvaluateConfig())
    result = fit(model, build_sampler(settings, data), data, evaluator, settings, None, snapshot)
    moved = [float((b - a).norm() / a.norm()) for a, b in pairwise(snapshots)]
    assert len(moved) == 8 and min(moved) > 1e-3, moved
    generated = [row["generated_loss"] for row in result.log]
    assert all(b < a for a, b in pairwise(generated)), generated
    assert generated[-1] < math.log(2) - 0.01, generated

    model.eval()
    batch = _batch(model, settings, data, 99)
    assert batch.generated is not None
    rows = torch.nonzero(batch.generated >= 0).squeeze(1)
    with torch.no_grad():
        users = model.backbone.layers()[0].mean(0)[batch.users[rows]]
        effects = model.effects(batch.generated[rows])
        margin = settings.neggen.effect_weight * (users * effects.positive).sum(-1)
    # users learnt to prefer their positives' key features to the negatives' (sign and size)
    assert margin.mean() > 1e-3 and (margin > 0).float().mean() > 0.6, margin
