"""VBPR and FREEDOM: FREEDOM's frozen item-item graph on a hand-made 6-item catalogue, its
degree-sensitive pruning (probabilities, seeded per epoch), what each backbone adds to an item's
representation, and both trained on the demo through the pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import FreedomConfig, NegGenSettings, load_config
from neggen_core.data import ItemFeatures
from neggen_core.errors import ConfigError
from neggen_core.evaluate.contract import read_report
from neggen_core.ingest.contract import item_count
from neggen_core.models.multimodal import (
    VBPR,
    Freedom,
    ItemGraph,
    edge_weights,
    kept_edges,
    knn_edges,
)
from neggen_core.models.neggen import NegGen
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store
from neggen_core.train.contract import read_training_log
from tests.support.helpers import DEMO_SETTINGS


def _angles(degrees: list[float]) -> np.ndarray:
    radians = np.radians(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


# two clusters of three items: 0-2 near 0 degrees, 3-5 near 90; lengths vary (cosine ignores them)
TEXT = (_angles([0, 10, 25, 90, 100, 120]) * np.array([[1], [3], [0.5], [2], [1], [4]])).astype(
    np.float32
)
IMAGE = _angles([0, 170, 5, 180, 12, 20])  # items 1 and 3 point away from 0, 2, 4 and 5


def _dense(graph: ItemGraph) -> np.ndarray:
    return graph.matrix.to_dense().numpy()


def test_each_item_neighbours_are_its_k_nearest_by_cosine_itself_included() -> None:
    rows, cols = knn_edges(TEXT, 3)
    neighbours = {int(r): set(cols[rows == r].tolist()) for r in np.unique(rows)}
    assert neighbours == {
        0: {0, 1, 2},
        1: {0, 1, 2},
        2: {0, 1, 2},
        3: {3, 4, 5},
        4: {3, 4, 5},
        5: {3, 4, 5},
    }
    assert (np.bincount(rows) == 3).all()


def test_the_text_graph_is_symmetrically_normalised_by_its_row_sums() -> None:
    graph = ItemGraph.build(TEXT[:, None, :], np.ones((6, 1), dtype=bool), 3, 0.1)
    dense = _dense(graph)
    # D^-1/2 A D^-1/2 with every row sum k = 3: each neighbour weighs 1/3
    expected = np.zeros((6, 6))
    expected[:3, :3] = expected[3:, 3:] = 1 / 3
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    np.testing.assert_allclose(graph.transpose.to_dense().numpy(), dense.T)


def test_the_attribute_texts_leave_the_item_graph_as_mmrec_builds_it() -> None:
    # attributes ordered unlike the text: were they a graph modality, the graph would change
    attributes = IMAGE[::-1].copy()
    present = np.ones((6, 3), dtype=bool)
    with_all = _dense(ItemGraph.build(np.stack([TEXT, IMAGE, attributes], 1), present, 2, 0.25))
    without = _dense(ItemGraph.build(np.stack([TEXT, IMAGE], 1), present[:, :2], 2, 0.25))
    np.testing.assert_array_equal(with_all, without)
    names = ("text", "attributes")
    text_and_attributes = ItemGraph.build(
        np.stack([TEXT, attributes], 1), present[:, :2], 2, 0.25, names
    )
    text = ItemGraph.build(TEXT[:, None, :], present[:, :1], 2, 0.25)
    np.testing.assert_array_equal(_dense(text_and_attributes), _dense(text))


def test_the_image_graph_is_weighted_and_an_item_without_an_image_keeps_its_text_graph() -> None:
    modal = np.stack([TEXT, IMAGE], axis=1)
    present = np.ones((6, 2), dtype=bool)
    present[5, 1] = False  # item 5 has no image: it is nobody's image neighbour
    dense = _dense(ItemGraph.build(modal, present, 2, 0.25))
    text = _dense(ItemGraph.build(TEXT[:, None, :], np.ones((6, 1), dtype=bool), 2, 0.25))
    image = np.zeros((6, 6))
    # among items 0-4 by image (item 5 is not among them): 0, 2, 4 point one way, 1, 3 the other
    image[0, [0, 2]] = image[2, [2, 0]] = image[4, [4, 2]] = 0.5
    image[1, [1, 3]] = image[3, [3, 1]] = 0.5
    with_image = np.arange(5)
    np.testing.assert_allclose(
        dense[with_image], 0.75 * text[with_image] + 0.25 * image[with_image], atol=1e-6
    )
    np.testing.assert_allclose(dense[5], text[5], atol=1e-6)
    np.testing.assert_allclose(dense.sum(1), np.ones(6), rtol=1e-6)


def test_pruning_keeps_an_edge_with_probability_proportional_to_one_over_root_degrees() -> None:
    # user 0 has 3 items, user 1 one; item 0 has both users
    users, items = np.array([0, 0, 0, 1]), np.array([0, 1, 2, 0])
    weights = edge_weights(users, items)
    np.testing.assert_allclose(
        weights, [1 / np.sqrt(3 * 2), 1 / np.sqrt(3), 1 / np.sqrt(3), 1 / np.sqrt(2)], rtol=1e-6
    )
    rng = np.random.default_rng(0)
    draws = 20_000
    counts = np.bincount([kept_edges(weights, 1, rng)[0] for _ in range(draws)], minlength=4)
    expected = weights / weights.sum()
    # four standard errors of a binomial share
    assert np.all(np.abs(counts / draws - expected) < 4 * np.sqrt(expected / draws))
    two = kept_edges(weights, 2, np.random.default_rng(1))
    assert len(set(two.tolist())) == 2 and list(two) == sorted(two)


def _freedom(dropout: float = 0.5, **settings: float) -> Freedom:
    users = np.array([0, 0, 0, 1, 1, 2, 2, 3])
    items = np.array([0, 1, 2, 2, 3, 4, 5, 5])
    modal = torch.from_numpy(TEXT)[:, None, :]
    return Freedom(
        4,
        6,
        8,
        999,
        users,
        items,
        modal,
        torch.ones(6, 1, dtype=torch.bool),
        FreedomConfig(knn_k=3, dropout=dropout, **settings),
    )


def test_pruning_is_seeded_per_epoch_and_ranking_uses_the_whole_graph() -> None:
    model = _freedom()
    model.train()
    model.pre_epoch(0)
    first = model.pruned.to_dense()
    assert int((first[:4, 4:] > 0).sum()) == model.keep == 4  # half the 8 edges kept
    model.pre_epoch(1)
    second = model.pruned.to_dense()
    model.pre_epoch(0)
    assert torch.equal(model.pruned.to_dense(), first)  # a replayed epoch prunes the same
    assert not torch.equal(first, second)
    again = _freedom()
    again.pre_epoch(0)
    assert torch.equal(again.pruned.to_dense(), first)
    # kept edges renormalised on the kept degrees, symmetric
    kept = first[:4, 4:]
    degree_user, degree_item = (kept > 0).sum(1), (kept > 0).sum(0)
    rows, cols = torch.nonzero(kept, as_tuple=True)
    expected = (degree_user[rows] * degree_item[cols]).float() ** -0.5
    torch.testing.assert_close(kept[rows, cols], expected)
    torch.testing.assert_close(first[4:, :4], kept.T)
    model.eval()
    ranking_users, _ = model.layers()
    model.train()
    pruned_users, _ = model.layers()
    assert not torch.allclose(ranking_users, pruned_users)
    assert torch.equal(_freedom(dropout=0.0).full.to_dense(), model.full.to_dense())


def test_freedom_adds_the_item_graph_propagation_to_every_hop() -> None:
    model = _freedom(dropout=0.0)
    model.eval()
    users, items = model.layers()
    ego = torch.cat([model.user_embedding, model.item_embedding]).detach()
    adjacency = model.full.to_dense()
    hops = [ego, adjacency @ ego, adjacency @ adjacency @ ego]
    graph = model.graph.matrix.to_dense() @ model.item_embedding.detach()
    for hop, expected in enumerate(hops):
        torch.testing.assert_close(items[hop].detach(), expected[4:] + graph)
        torch.testing.assert_close(users[hop].detach(), expected[:4])
    # the final item representation is the LightGCN mean plus the graph term once
    _, final = model.final_embeddings()
    torch.testing.assert_close(final, torch.stack(hops).mean(0)[4:] + graph)


def test_freedom_s_modal_bpr_counts_only_with_its_weight() -> None:
    from neggen_core.models.base import Batch

    batch = Batch(torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([4, 5]))
    without = _freedom(dropout=0.0).calculate_loss(batch)
    assert without.parts["reg"] == 0.0
    weighted = _freedom(dropout=0.0, reg_weight=0.5).calculate_loss(batch)
    assert weighted.parts["reg"] > 0
    expected = without.total.item() + 0.5 * weighted.parts["reg"]
    assert weighted.total.item() == pytest.approx(expected)
    model = _freedom(dropout=0.0, reg_weight=0.5)
    model.calculate_loss(batch).total.backward()
    assert model.modal[0].grad is not None and model.modal[0].grad.abs().sum() > 0


def test_vbpr_items_are_their_id_embedding_beside_their_projected_features() -> None:
    features = torch.from_numpy(TEXT)[:, None, :]
    model = VBPR(4, 6, 8, 0.01, 999, features)
    users, items = model.layers()
    assert users.shape == (1, 4, 16) and items.shape == (1, 6, 16)
    torch.testing.assert_close(items[0, :, :8], model.item_embedding)
    torch.testing.assert_close(items[0, :, 8:], model.projection(features[:, 0]))
    moved = VBPR(4, 6, 8, 0.01, 999, features * 2)
    scores = model.full_sort_predict(torch.arange(4))
    assert not torch.allclose(scores, moved.full_sort_predict(torch.arange(4)))


@pytest.mark.parametrize(
    "settings",
    [
        ("train.model=freedom", "train.sampler=rns"),
        ("train.model=vbpr", "train.sampler=dns"),
    ],
)
def test_the_multimodal_backbones_train_and_rank_on_the_demo(
    demo_built: tuple[str, dict[str, ArtifactRef]], settings: tuple[str, ...]
) -> None:
    root, _ = demo_built
    config = load_config(
        None, [f"artifacts.root={root}", *DEMO_SETTINGS, "train.epochs=20", *settings]
    )
    refs: dict[str, ArtifactRef] = {}
    for stage in ("ingest", "attributes", "negatives", "embeddings", "train", "evaluate"):
        refs[stage] = run_stage(config, stage, refs).ref
    store = open_store(config)
    log = read_training_log(store, refs["train"])
    assert log.height == config.train.epochs
    report = read_report(store, refs["evaluate"])
    backbone = config.train.backbone_in_use
    assert backbone in report["method"]
    # 20 epochs move valid Recall@20 well off a random ranking's (about 20 / items)
    assert report["valid"]["recall@20"] > 1.5 * 20 / item_count(store, refs["ingest"])


def test_a_virtual_node_takes_the_item_graph_row_of_the_item_it_resembles() -> None:
    """A generated negative as a virtual node of FREEDOM's item-item graph: a vector pointing
    as item j's does gets item j's row; under NegGen its graph term replaces its positive's."""
    model = _freedom(dropout=0.0)
    nodes = model.virtual_nodes(TEXT[[4, 1]][:, None, :] * 2, np.ones((2, 1), dtype=bool))
    before, graph = model.graph_terms()
    torch.testing.assert_close(nodes.term(torch.arange(2), before), graph[[4, 1]])

    features = ItemFeatures.build(
        TEXT[:, None, :],
        np.ones((6, 1), dtype=bool),
        TEXT[[4]][:, None, :],  # item 0's negative reads like item 4
        np.ones((1, 1), dtype=bool),
        np.array([0]),
        np.array(["n0"]),
    )
    positive = torch.randn(1, 8)
    owner, row = torch.tensor([0]), torch.tensor([0])
    virtual = NegGen(model, features, NegGenSettings(virtual_node=True), 999)
    moved = virtual.collaborative(positive, owner, row)
    torch.testing.assert_close(moved, positive - graph[[0]] + graph[[4]])
    plain = NegGen(_freedom(dropout=0.0), features, NegGenSettings(), 999)
    assert torch.equal(plain.collaborative(positive, owner, row), positive)
    with pytest.raises(ConfigError, match=r"virtual_node needs train\.backbone freedom"):
        load_config(None, ["train.neggen.virtual_node=true"])
