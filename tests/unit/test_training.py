"""Samplers, models, the NegGen loss, the trainer, and the train/evaluate stages on the demo."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
import polars as pl
import pytest
import torch

from neggen_core.artifacts.schemas import METRICS, RECOMMENDATIONS, TRAINING_LOG
from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import (
    AhnsConfig,
    EvaluateConfig,
    NeggenConfig,
    TrainConfig,
    load_config,
    with_settings,
)
from neggen_core.data import TrainingData, UserItems
from neggen_core.errors import ArtifactError, ConfigError, TrainingError
from neggen_core.evaluation import evaluator as evaluator_module
from neggen_core.evaluation.evaluator import Evaluator
from neggen_core.models.backbones import MF, Layers, LightGCN
from neggen_core.models.base import Batch, Losses, Recommender
from neggen_core.models.neggen import NegGen
from neggen_core.models.registry import BACKBONES, MODELS, SAMPLERS, build_model, build_sampler
from neggen_core.models.samplers import AHNS, DNS, RNS, MixGCF, uniform_candidates
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store, plan_versions
from neggen_core.train.compute import FitResult, fit, generated_rows
from neggen_core.train.contract import load_training_data, training_data
from neggen_core.train.contract import version_config as train_version_config
from tests.support.helpers import DEMO_SETTINGS, copy_data_stages


def _crowded() -> TrainingData:
    """User 0 has trained on 9 of 10 items; user 1 on one."""
    users = np.array([0] * 9 + [1])
    items = np.array([*range(9), 3])
    train = UserItems.from_pairs(users, items, 2)
    empty = UserItems.from_pairs(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 2)
    return TrainingData(
        2, 10, users, items, {"train": train, "valid": empty, "test": empty}, train.keys(10), None
    )


def test_uniform_candidates_are_never_train_items() -> None:
    data = _crowded()
    rng = np.random.default_rng(0)
    users = np.array([0, 1] * 500)
    drawn = uniform_candidates(data, users, 8, rng)
    assert (drawn[users == 0] == 9).all()
    assert not data.interacted(np.broadcast_to(users[:, None], drawn.shape), drawn).any()
    assert set(np.unique(drawn[users == 1])) == set(range(10)) - {3}


class Scores(Recommender):
    """A model whose score of (user, item) is a fixed table."""

    def __init__(self, table: np.ndarray):
        super().__init__()
        self.table = torch.from_numpy(table)
        self.hops = 2

    def score_candidates(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.table[users[:, None], items]

    def calculate_loss(self, batch: Batch) -> Losses:
        raise AssertionError("a sampler never trains the model")

    def full_sort_predict(
        self, users: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise AssertionError("a sampler never ranks every item")


@pytest.mark.parametrize("name", ["rns", "dns", "mixgcf", "ahns"])
def test_every_sampler_returns_only_items_the_user_has_not_trained_on(name: str) -> None:
    data = _crowded()
    sampler = build_sampler(TrainConfig(sampler=name), data)
    model = Scores(np.random.default_rng(1).random((2, 10)).astype(np.float32))
    users = np.array([0, 1] * 300)
    positives = np.where(users == 0, 4, 3)
    batch = sampler.sample(model, users, positives, np.random.default_rng(2))
    negatives = batch.negatives.numpy()
    rows = users[:, None] if negatives.ndim == 2 else users
    assert not data.interacted(np.broadcast_to(rows, negatives.shape), negatives).any()
    if name == "mixgcf":
        assert negatives.shape == (600, 32) and batch.mix is not None
        assert batch.mix.shape == (600, 2)


def test_dns_takes_the_highest_scored_and_ahns_the_adaptive_target() -> None:
    data = _crowded()
    table = np.zeros((2, 10), dtype=np.float32)
    table[1] = [0.9, 0.04, 0.3, 1.0, 0.06, 0.5, 0.7, 0.2, 0.1, 0.8]
    model = Scores(table)
    users, positives = np.array([1]), np.array([3])
    # the pool is every item but the train item 3, drawn many times over
    dns = DNS(data, pool=200).sample(model, users, positives, np.random.default_rng(0))
    assert dns.negatives.tolist() == [0]
    # AHNS: s_pos = 1, target = 0.1 * (1 + 1)^(-2 + 1) = 0.05; items 1 (0.04) and 4 (0.06) tie
    ahns = AHNS(data, AhnsConfig(pool=200))
    assert ahns.sample(model, users, positives, np.random.default_rng(0)).negatives.item() in {1, 4}
    table[1, 4] = 0.051
    chosen = ahns.sample(model, users, positives, np.random.default_rng(0))
    assert chosen.negatives.tolist() == [4]
    assert isinstance(RNS(data).sample(model, users, positives, np.random.default_rng(0)), Batch)
    assert MixGCF(data, 4).sample(model, users, positives, np.random.default_rng(0)).mix is not None


@pytest.mark.parametrize(
    ("hop_scoring", "expected"), [("pooled", [0.75, 1.25]), ("per_hop", [1.0, 0.5])]
)
def test_mixgcf_scores_every_hop_with_the_pooled_user_as_the_official_code(
    hop_scoring: str, expected: list[float]
) -> None:
    """Two hops, mixing weight 0 (the candidates as they are). The user is [1, 0] at hop 0 and
    [0, 1] at hop 1, [0.5, 0.5] pooled. Pooled scoring (huangtinglin/MixGCF) picks candidate 2
    at both hops; scoring each hop with that hop's user picks candidate 1, then 2."""
    users = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # (hops, users, d)
    items = torch.tensor(
        [[[0.0, 0.0], [2.0, 0.0], [1.5, 1.5]], [[0.0, 0.0], [0.0, 0.1], [0.0, 1.0]]]
    )  # (hops, items, d): item 0 the positive, 1 and 2 the pool
    batch = Batch(
        users=torch.tensor([0]),
        positives=torch.tensor([0]),
        negatives=torch.tensor([[1, 2]]),
        mix=torch.zeros(1, 2),
        hop_scoring=hop_scoring,  # type: ignore[arg-type]
    )
    backbone = MF(1, 3, 2, 0.0, seed=0)
    embedded = backbone.embed_batch(batch, users, items)
    torch.testing.assert_close(embedded.negative, torch.tensor([expected]))


def test_unknown_names_are_clear_errors_when_the_config_loads() -> None:
    with pytest.raises(
        ConfigError, match=r"train.sampler: Input should be 'rns', 'dns', 'mixgcf' or 'ahns' "
    ) as error:
        load_config(None, ["train.sampler=bns"])
    assert "(got 'bns')" in str(error.value)
    with pytest.raises(ConfigError, match=r"train.model: Input should be .* \(got 'ngcf'\)"):
        load_config(None, ["train.model=ngcf"])
    with pytest.raises(ConfigError, match=r"train.backbone: .* \(got 'ngcf'\)"):
        with_settings(load_config(), {"train.backbone": "ngcf"})


def test_the_registry_builds_every_name_the_config_allows() -> None:
    fields = TrainConfig.model_fields
    for registry, name in ((MODELS, "model"), (BACKBONES, "backbone"), (SAMPLERS, "sampler")):
        assert set(registry) == set(get_args(fields[name].annotation)), name


def _config(root: str, *more: str) -> NeggenConfig:
    return load_config(None, [f"artifacts.root={root}", *DEMO_SETTINGS, *more])


@pytest.fixture(scope="module")
def demo(demo_built: tuple[str, dict[str, ArtifactRef]]) -> tuple[str, dict[str, ArtifactRef]]:
    return demo_built


def _data(root: str, refs: dict[str, ArtifactRef]) -> TrainingData:
    return load_training_data(open_store(_config(root)), refs["ingest"], refs["embeddings"])


def test_the_neggen_loss_is_finite_for_extreme_inputs(
    demo: tuple[str, dict[str, ArtifactRef]],
) -> None:
    data = _data(*demo)
    settings = TrainConfig(neggen={"temperature": 0.01})
    model = build_model(settings, data)
    assert isinstance(model, NegGen)
    with torch.no_grad():
        model.backbone.user_embedding.mul_(1e4)
        model.backbone.item_embedding.mul_(-1e4)
    users = torch.from_numpy(data.train_users[:64])
    positives = torch.from_numpy(data.train_items[:64])
    assert data.features is not None
    picked = generated_rows(data.features, positives.numpy(), np.random.default_rng(0))
    assert (picked >= 0).any()
    batch = Batch(
        users, positives, (positives + 1) % data.n_items, generated=torch.from_numpy(picked)
    )
    losses = model.calculate_loss(batch)
    assert torch.isfinite(losses.total) and losses.total > 1e3
    assert {"bpr", "generated", "alignment", "reg"} <= set(losses.parts)
    losses.total.backward()
    for parameter in model.parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all()


def test_the_generated_negative_is_drawn_among_the_positives_own(
    demo: tuple[str, dict[str, ArtifactRef]],
) -> None:
    features = _data(*demo).features
    assert features is not None
    positives = np.arange(len(features.negative_indptr) - 1)
    picked = generated_rows(features, positives, np.random.default_rng(3))
    owners = features.negative_owner.numpy()
    has = picked >= 0
    assert (owners[picked[has]] == positives[has]).all()
    assert (np.diff(features.negative_indptr)[~has] == 0).all()


def _fit_recording(
    data: TrainingData, settings: TrainConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[Batch], FitResult]:
    """Train `settings` on `data`, keeping every batch NegGen's loss was given."""
    batches: list[Batch] = []
    original = NegGen.calculate_loss

    def recording(self: NegGen, batch: Batch, layers: Layers | None = None) -> Losses:
        batches.append(batch)
        return original(self, batch, layers)

    monkeypatch.setattr(NegGen, "calculate_loss", recording)
    model = build_model(settings, data)
    evaluator = Evaluator(data, EvaluateConfig())
    return batches, fit(model, build_sampler(settings, data), data, evaluator, settings)


def test_the_uniform_choice_is_the_draw_of_before(
    demo: tuple[str, dict[str, ArtifactRef]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """negative_choice uniform (the control): each pair's generated negative is drawn uniformly
    among its positive's from the epoch's generator right after the real negatives, exactly as
    before there was a per-user choice; the log has no fallback share."""
    data = _data(*demo)
    assert data.features is not None
    settings = TrainConfig(epochs=1, batch_size=1024, neggen={"negative_choice": "uniform"})
    batches, result = _fit_recording(data, settings, monkeypatch)
    rng = np.random.default_rng([settings.seed, 0])
    order = rng.permutation(len(data.train_users))
    sampler, model = build_sampler(settings, data), build_model(settings, data)
    starts = range(0, len(order), settings.batch_size)
    assert len(batches) == len(starts) > 1
    for batch, start in zip(batches, starts, strict=True):
        rows = order[start : start + settings.batch_size]
        sampler.sample(model, data.train_users[rows], data.train_items[rows], rng)  # RNS's draws
        expected = generated_rows(data.features, data.train_items[rows], rng)
        assert batch.generated is not None and batch.generated.tolist() == expected.tolist()
    assert result.log[0]["generated_fallback_share"] is None


def test_the_per_user_choice_gives_an_eligible_negative_wherever_there_is_one(
    demo: tuple[str, dict[str, ArtifactRef]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """negative_choice per_user (the default): a pair whose positive has a negative the user
    may be given (none of its new values chosen by the user in the category) gets one; the
    others draw uniformly, and their share of the pairs with negatives is logged."""
    data = _data(*demo)
    features, choices = data.features, data.choices
    assert features is not None and choices is not None
    settings = TrainConfig(epochs=1, batch_size=1024)
    batches, result = _fit_recording(data, settings, monkeypatch)
    pairs, fallbacks = 0, 0
    for batch in batches:
        users, positives = batch.users.numpy(), batch.positives.numpy()
        assert batch.generated is not None
        picked = batch.generated.numpy()
        has = picked >= 0
        some = choices.eligible(users, positives, features.candidates(positives)).any(1)
        given = choices.eligible(users, positives, picked[:, None])[:, 0]
        assert given[has & some].all()
        pairs, fallbacks = pairs + int(has.sum()), fallbacks + int((has & ~some).sum())
    share = result.log[0]["generated_fallback_share"]
    assert share == pytest.approx(fallbacks / pairs) and 0 < share < 0.5


def test_the_per_user_choice_and_the_loss_share_one_propagation_and_change_nothing(
    demo: tuple[str, dict[str, ArtifactRef]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each training step propagates the graph once for both the per-user choice and the loss
    (it was twice: on Games the choice was a third of an epoch), and the model it trains is
    the same, bit for bit, as when the loss propagates again on its own."""
    data = _data(*demo)
    settings = TrainConfig(epochs=2, batch_size=1024)
    steps = 2 * -(-len(data.train_users) // settings.batch_size)
    propagations = 0
    original = LightGCN.layers

    def counted(self: LightGCN) -> Layers:
        nonlocal propagations
        propagations += self.training
        return original(self)

    monkeypatch.setattr(LightGCN, "layers", counted)
    shared = build_model(settings, data)
    evaluator = Evaluator(data, EvaluateConfig())
    fit(shared, build_sampler(settings, data), data, evaluator, settings)
    assert propagations == steps

    loss = NegGen.calculate_loss
    monkeypatch.setattr(
        NegGen, "calculate_loss", lambda self, batch, layers=None: loss(self, batch)
    )
    alone = build_model(settings, data)
    fit(alone, build_sampler(settings, data), data, evaluator, settings)
    assert propagations == 3 * steps
    for name, value in shared.state_dict().items():
        assert torch.equal(value, alone.state_dict()[name]), name


def test_the_per_user_choice_without_its_arrays_is_a_clear_error(
    demo: tuple[str, dict[str, ArtifactRef]],
) -> None:
    root, refs = demo
    store = open_store(_config(root))
    data = load_training_data(store, refs["ingest"], refs["embeddings"], choices=False)
    settings = TrainConfig(epochs=1)
    model = build_model(settings, data)
    with pytest.raises(TrainingError, match=r"negative_choice per_user needs the negatives'"):
        fit(model, build_sampler(settings, data), data, Evaluator(data, EvaluateConfig()), settings)


GENERATED_SETTINGS = (
    "train.neggen.generated_weight=0.25",
    "train.neggen.negative_choice=uniform",
    "train.neggen.skip_possible_false_negatives=false",
    "train.neggen.alignment_weight=0.1",
    "train.neggen.temperature=0.5",
)
UNREAD = {"real_only": GENERATED_SETTINGS, "no_alignment": GENERATED_SETTINGS[3:], "none": ()}


@pytest.mark.parametrize("ablation", list(UNREAD))
def test_an_ablation_s_version_leaves_out_the_settings_it_never_reads(
    demo: tuple[str, dict[str, ArtifactRef]], ablation: str
) -> None:
    """`real_only` trains NegGen's content with real negatives only, `no_alignment` without
    the alignment: given the same data, generated negatives included, each trains the same bits
    whatever the settings it never reads (`real_only`: the generated negatives' weight, choice,
    flags and alignment), so they leave its train version and a grid over them trains it once;
    `real_only` does not load the negatives. NegGen's own training and version follow each."""
    root, refs = demo
    unread = UNREAD[ablation]
    base = _config(root, f"train.neggen.ablation={ablation}", "train.epochs=2")
    for setting in GENERATED_SETTINGS:
        other = _config(root, f"train.neggen.ablation={ablation}", "train.epochs=2", setting)
        same = plan_versions(other)["train"] == plan_versions(base)["train"]
        assert same == (setting in unread), setting

    data = _data(root, refs)  # with the generated negatives
    assert data.features is not None and data.features.generated > 0
    states = []
    for more in ((), unread or GENERATED_SETTINGS):
        config = _config(root, f"train.neggen.ablation={ablation}", "train.epochs=2", *more)
        model = build_model(config.train, data)
        evaluator = Evaluator(data, config.evaluate)
        fit(model, build_sampler(config.train, data), data, evaluator, config.train)
        states.append(model.state_dict())
    equal = all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert equal == bool(unread)

    loaded = training_data(base, open_store(base), refs, for_training=True).features
    assert loaded is not None
    assert (loaded.generated == 0) == (ablation == "real_only")


def test_real_only_builds_no_virtual_node(demo: tuple[str, dict[str, ArtifactRef]]) -> None:
    """FREEDOM's virtual nodes are made from the generated negatives, which `real_only` never
    reads: it builds none, trains the same bits with `virtual_node` on or off, and keeps one
    version."""
    root, refs = demo
    data = _data(root, refs)
    versions, states = set(), []
    for virtual in ("false", "true"):
        config = _config(
            root,
            "train.backbone=freedom",
            "train.neggen.ablation=real_only",
            "train.epochs=2",
            f"train.neggen.virtual_node={virtual}",
        )
        versions.add(plan_versions(config)["train"])
        model = build_model(config.train, data)
        assert isinstance(model, NegGen) and model.virtual is None
        evaluator = Evaluator(data, config.evaluate)
        fit(model, build_sampler(config.train, data), data, evaluator, config.train)
        states.append(model.state_dict())
    assert len(versions) == 1
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_the_temperature_is_read_only_with_an_alignment() -> None:
    def version(*settings: str) -> dict[str, object]:
        return train_version_config(load_config(None, list(settings)))

    off = "train.neggen.alignment_weight=0"
    assert version(off) == version(off, "train.neggen.temperature=1")
    assert version() != version("train.neggen.temperature=1")


@pytest.mark.parametrize(
    "settings",
    [
        ("train.model=mf", "train.sampler=rns"),
        ("train.model=lightgcn", "train.sampler=rns"),
        ("train.model=lightgcn", "train.sampler=dns"),
        ("train.model=lightgcn", "train.sampler=mixgcf"),
        ("train.model=lightgcn", "train.sampler=ahns"),
        ("train.model=mf", "train.sampler=mixgcf"),
        ("train.model=neggen", "train.sampler=rns"),
        ("train.model=neggen", "train.backbone=mf", "train.sampler=dns"),
        ("train.model=neggen", "train.neggen.ablation=no_causal"),
        ("train.model=neggen", "train.neggen.ablation=no_alignment"),
        ("train.model=neggen", "train.neggen.negative_choice=uniform"),
        ("train.model=neggen", "train.neggen.ablation=real_only", "train.sampler=ahns"),
        ("train.model=freedom", "train.sampler=ahns"),
        ("train.model=freedom", "train.sampler=mixgcf", "train.freedom.reg_weight=0.001"),
        ("train.model=vbpr", "train.sampler=mixgcf"),
        ("train.model=neggen", "train.backbone=freedom", "train.sampler=dns"),
        ("train.model=neggen", "train.backbone=vbpr", "train.sampler=ahns"),
        ("train.model=neggen", "train.backbone=freedom", "train.neggen.virtual_node=true"),
    ],
    ids=lambda s: "+".join(v.split("=")[1] for v in s),
)
def test_one_epoch_of_every_model_and_sampler(
    demo: tuple[str, dict[str, ArtifactRef]], tmp_path: Path, settings: tuple[str, ...]
) -> None:
    root, refs = demo
    config = _config(root, "train.epochs=1", *settings)
    upstream = {"ingest": refs["ingest"], "embeddings": refs["embeddings"]}
    train = run_stage(config, "train", upstream).ref
    store = open_store(config)
    log = store.read_frame(train, "training_log", TRAINING_LOG)
    assert log.height == 1 and np.isfinite(log["loss"][0])
    evaluated = run_stage(config, "evaluate", {**upstream, "train": train}).ref
    metrics = store.read_frame(evaluated, "metrics", METRICS)
    assert set(metrics["split"]) == {"valid", "test"}
    assert metrics.filter(pl.col("metric") == "recall")["value"].is_between(0, 1).all()


def test_evaluate_writes_the_recommendations_the_test_metrics_came_from(
    demo: tuple[str, dict[str, ArtifactRef]],
) -> None:
    root, refs = demo
    config = _config(root, "train.model=lightgcn")
    upstream = {"ingest": refs["ingest"], "embeddings": refs["embeddings"]}
    train = run_stage(config, "train", upstream).ref
    evaluated = run_stage(config, "evaluate", {**upstream, "train": train}).ref
    store = open_store(config)
    recommendations = store.read_frame(evaluated, "recommendations", RECOMMENDATIONS)
    data = _data(root, refs)
    test_users = np.flatnonzero(data.splits["test"].counts)
    assert recommendations["user_idx"].n_unique() == len(test_users)
    assert recommendations.group_by("user_idx").len()["len"].unique().to_list() == [50]
    # recall@20 again, from the table alone
    test = data.splits["test"]
    top = recommendations.filter(pl.col("rank") <= 20)
    hits = np.array(
        [
            len(set(group["item_idx"]) & set(test.items[test.indptr[u] : test.indptr[u + 1]]))
            / test.counts[u]
            for (u,), group in top.group_by("user_idx", maintain_order=True)
        ]
    )
    metrics = store.read_frame(evaluated, "metrics", METRICS)
    recall = metrics.filter(
        (pl.col("split") == "test") & (pl.col("metric") == "recall") & (pl.col("k") == 20)
    )["value"][0]
    assert hits.mean() == pytest.approx(recall)
    # not trained on, never recommended
    train_keys = data.train_keys
    pairs = recommendations.select("user_idx", "item_idx").to_numpy().astype(np.int64)
    assert not np.isin(pairs[:, 0] * data.n_items + pairs[:, 1], train_keys).any()


@pytest.mark.parametrize("backbone", ["lightgcn", "freedom"])  # FREEDOM prunes per epoch
def test_a_killed_training_resumes_to_the_same_model_and_metrics(
    demo: tuple[str, dict[str, ArtifactRef]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backbone: str,
) -> None:
    root, refs = demo
    more = (
        "train.model=neggen",
        f"train.backbone={backbone}",
        "train.epochs=6",
        "train.patience=3",
    )
    clean = _config(root, *more)
    upstream = {"ingest": refs["ingest"], "embeddings": refs["embeddings"]}
    reference = run_stage(clean, "train", upstream).ref
    reference_eval = run_stage(clean, "evaluate", {**upstream, "train": reference}).ref

    killed = _config(str(tmp_path / "killed"), *more)
    fresh: dict[str, ArtifactRef] = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings") + 1]:
        fresh[stage] = run_stage(killed, stage, fresh).ref
    upstream = {"ingest": fresh["ingest"], "embeddings": fresh["embeddings"]}
    original = evaluator_module.Evaluator.rank
    calls: list[str] = []

    def dies_in_the_fourth_evaluation(self, model, split, top=None):  # type: ignore[no-untyped-def]
        calls.append(split)
        if len(calls) == 4:
            raise KeyboardInterrupt("killed")
        return original(self, model, split, top)

    monkeypatch.setattr(evaluator_module.Evaluator, "rank", dies_in_the_fourth_evaluation)
    with pytest.raises(KeyboardInterrupt):
        run_stage(killed, "train", upstream)
    monkeypatch.setattr(evaluator_module.Evaluator, "rank", original)
    resumed = run_stage(killed, "train", upstream).ref
    resumed_eval = run_stage(killed, "evaluate", {**upstream, "train": resumed}).ref

    a, b = open_store(clean), open_store(killed)
    timing = ["train_seconds", "eval_seconds"]
    logs = [
        store.read_frame(ref, "training_log", TRAINING_LOG).drop(timing)
        for store, ref in ((a, reference), (b, resumed))
    ]
    # the same epochs with the same valid metrics; a loss (a float32 sum whose order follows
    # memory alignment) may differ in its last bits: a few float32 epsilons (1.2e-7)
    assert (
        logs[0]
        .select("epoch", "valid_recall_20", "valid_ndcg_20", "improved")
        .equals(logs[1].select("epoch", "valid_recall_20", "valid_ndcg_20", "improved"))
    )
    assert logs[0]["generated_fallback_share"].equals(logs[1]["generated_fallback_share"])
    assert logs[0]["generated_fallback_share"].is_not_null().all()
    for column in ("loss", "bpr_loss", "generated_loss", "alignment_loss", "reg_loss"):
        np.testing.assert_allclose(
            logs[0][column].to_numpy(), logs[1][column].to_numpy(), rtol=1e-6
        )
    assert a.read_frame(reference_eval, "metrics", METRICS).equals(
        b.read_frame(resumed_eval, "metrics", METRICS)
    )
    assert "checkpoint.pt" not in {f.path for f in b.manifest("train", resumed.version).files}


def test_random_intervention_without_control_negatives_is_a_clear_error(
    demo: tuple[str, dict[str, ArtifactRef]], tmp_path: Path
) -> None:
    # in a copy: the session's root holds one version of each data stage (test_versions counts)
    copy_data_stages(demo[0], tmp_path)
    config = _config(
        str(tmp_path), "negatives.controls=false", "train.neggen.ablation=random_intervention"
    )
    store = open_store(config)
    built = {stage: store.ref(stage, demo[1][stage].version) for stage in ("ingest", "attributes")}
    for stage in ("negatives", "embeddings"):
        built[stage] = run_stage(config, stage, built).ref
    upstream = {"ingest": built["ingest"], "embeddings": built["embeddings"]}
    with pytest.raises(ArtifactError, match=r"no control negatives; build them with negatives"):
        run_stage(config, "train", upstream)


def test_mf_has_one_hop_and_lightgcn_one_more_per_layer(
    demo: tuple[str, dict[str, ArtifactRef]],
) -> None:
    data = _data(*demo)
    assert build_model(TrainConfig(model="mf"), data).hops == 1
    model = build_model(TrainConfig(model="lightgcn", n_layers=3), data)
    users, items = model.layers()  # type: ignore[operator]
    assert users.shape == (4, data.n_users, 64) and items.shape == (4, data.n_items, 64)
    assert isinstance(build_model(TrainConfig(model="mf"), data), MF)


def test_neggen_reduces_to_its_backbone_without_its_terms(
    demo: tuple[str, dict[str, ArtifactRef]],
) -> None:
    data = _data(*demo)
    settings = TrainConfig(model="neggen", epochs=2, neggen={"effect_weight": 0.0})
    neggen, backbone = build_model(settings, data), build_model(TrainConfig(model="lightgcn"), data)
    assert isinstance(neggen, NegGen)
    users = torch.arange(data.n_users)
    neggen.eval()
    backbone.eval()
    # without the effect's weight, the scores are the backbone's
    torch.testing.assert_close(neggen.full_sort_predict(users), backbone.full_sort_predict(users))

    # without the effect and without generated negatives, training is the backbone's, exactly
    plain = TrainConfig(model="lightgcn", epochs=2)
    reduced = TrainConfig(
        model="neggen", epochs=2, neggen={"ablation": "real_only", "effect_weight": 0.0}
    )
    logs = []
    for config in (plain, reduced):
        model = build_model(config, data)
        result = fit(
            model, build_sampler(config, data), data, Evaluator(data, EvaluateConfig()), config
        )
        logs.append([(row["loss"], row["valid_recall_20"]) for row in result.log])
    assert logs[0] == logs[1]


ELSEWHERE = (
    "negatives.round=2",
    "train.neggen.effect_weight=0.9",
    "train.backbone=mf",
    "train.samplers.mixgcf.pool=8",  # the runs below use DNS
)


@pytest.mark.parametrize("model", ["lightgcn", "mf"])
def test_a_baseline_version_follows_only_what_it_reads(
    demo: tuple[str, dict[str, ArtifactRef]], model: str
) -> None:
    """A baseline reads no generated negatives and no content features: a new negatives
    round or other NegGen settings leave its train and evaluate versions (and so its built
    runs) as they are; NegGen's follow them."""
    root, refs = demo
    baseline = [f"train.model={model}", "train.sampler=dns", "train.epochs=1"]
    before, after = (plan_versions(_config(root, *baseline, *more)) for more in ((), ELSEWHERE))
    assert before["negatives"] != after["negatives"]
    assert before["embeddings"] != after["embeddings"]
    assert (before["train"], before["evaluate"]) == (after["train"], after["evaluate"])

    neggen = ["train.model=neggen", "train.epochs=1"]
    before, after = (plan_versions(_config(root, *neggen, *more)) for more in ((), ELSEWHERE))
    assert before["train"] != after["train"] and before["evaluate"] != after["evaluate"]

    config = _config(root, *baseline)  # built from the interactions alone
    train = run_stage(config, "train", {"ingest": refs["ingest"]}).ref
    assert train.version == plan_versions(_config(root, *baseline, *ELSEWHERE))["train"]
    assert open_store(config).manifest("train", train.version).upstream == {
        "ingest": refs["ingest"].version
    }
    evaluated = run_stage(config, "evaluate", {"ingest": refs["ingest"], "train": train}).ref
    assert evaluated.version == plan_versions(config)["evaluate"]


@pytest.mark.parametrize(
    "settings",
    [
        ("train.model=mf", "train.sampler=rns"),
        ("train.model=lightgcn", "train.sampler=mixgcf"),
        ("train.model=neggen", "train.sampler=dns"),
    ],
    ids=lambda s: "+".join(v.split("=")[1] for v in s),
)
def test_training_gives_the_same_bits_on_one_or_two_threads(
    demo: tuple[str, dict[str, ArtifactRef]], settings: tuple[str, ...]
) -> None:
    """What makes a comparison's tables the same on 1 worker x 2 threads and on 2 workers x 1
    thread: without deterministic kernels MF's gradients differ in the last bits (advanced
    indexing adds in thread order), and NegGen's without MKL's strict mode or with a
    matrix-vector product in its attention."""
    root, refs = demo
    config = _config(root, "train.epochs=4", "train.patience=100", *settings)
    data = _data(root, refs)
    before = torch.get_num_threads()
    states, logs = [], []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = build_model(config.train, data)
            result = fit(
                model,
                build_sampler(config.train, data),
                data,
                Evaluator(data, config.evaluate),
                config.train,
            )
            states.append(model.state_dict())
            logs.append([(r["loss"], r["valid_recall_20"]) for r in result.log])
    finally:
        torch.set_num_threads(before)
    assert logs[0] == logs[1]
    differ = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
    assert not differ, differ
