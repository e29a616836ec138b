"""The negatives stage with the lexicon backend: interventions, checks, balance, rounds, resume."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from neggen_core.artifacts.schemas import ATTRIBUTES, INTERACTIONS, NEGATIVES
from neggen_core.artifacts.store import ArtifactRef, ArtifactStore
from neggen_core.config import NeggenConfig, load_config
from neggen_core.llm.models import Attribute, Intervention, InterventionPlan, ItemInput
from neggen_core.negatives import lexicon
from neggen_core.negatives.lexicon import POOL_SIZE, check, contrasting_values
from neggen_core.negatives.models import Positive
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store, plan_versions
from tests.support.assertions import assert_only_intervened_changed


def _config(root: str, *more: str) -> NeggenConfig:
    return load_config(None, [f"artifacts.root={root}", "llm.zero_shot=false", *more])


def _build(config: NeggenConfig) -> tuple[ArtifactStore, ArtifactRef, ArtifactRef]:
    ingest = run_stage(config, "ingest", {}).ref
    attributes = run_stage(config, "attributes", {"ingest": ingest}).ref
    negatives = run_stage(config, "negatives", {"ingest": ingest, "attributes": attributes}).ref
    return open_store(config), ingest, negatives


def _firsts(value: str, pool: dict[str, int], name: str = "brand", **avoid: str) -> Counter[str]:
    """How often each value is drawn first, over 2,000 seeds."""
    kept = frozenset(avoid.values())
    return Counter(
        contrasting_values(name, value, pool, random.Random(seed), kept)[0] for seed in range(2000)
    )


def test_contrasting_values_are_a_seeded_draw_not_the_alphabet() -> None:
    brands = {f"brand {chr(97 + i)}{chr(97 + j)}": 1 for i in range(6) for j in range(5)}
    firsts = _firsts("zebra", brands)
    assert len(firsts) == 30  # every one of 30 equally likely brands comes first sometimes
    assert max(firsts.values()) / 2000 < 0.07  # none near the 1/30 share's double
    assert contrasting_values("brand", "bic", {"bic": 3}, random.Random(0)) == []
    same = [contrasting_values("brand", "zebra", brands, random.Random(7)) for _ in range(2)]
    assert same[0] == same[1] and len(same[0]) == POOL_SIZE  # the same seed, the same draw


def test_contrasting_values_prefer_common_and_different_values() -> None:
    firsts = _firsts("acme", {"acme": 9, "rare": 1, "common": 20})
    assert firsts["common"] > 10 * firsts["rare"]
    colours = _firsts("black", {"black": 1, "grey": 1, "white": 1}, "colour")
    assert colours["white"] > 2 * colours["grey"]  # white is far from black, grey is near


def test_contrasting_values_skip_what_buyers_chose_and_other_units() -> None:
    pool = {"blue": 5, "red": 5, "green": 5}
    assert set(_firsts("blue", pool, "colour", a="red")) == {"green"}
    assert set(_firsts("blue", pool, "colour", a="red", b="green")) == {"red", "green"}
    kept = frozenset({"red"})
    assert contrasting_values("colour", "blue", pool, random.Random(1), kept) == ["green", "red"]
    lengths = {"1 mm": 4, "3 mm": 2, "56 inch": 9, "10 mm": 1}
    assert set(_firsts("1 mm", lengths, "length")) == {"3 mm", "10 mm"}
    assert contrasting_values("quantity", "12", {"12": 1, "1": 1, "100": 1}, random.Random(0))


def test_check_rejects_a_negative_that_changes_nothing_or_too_much() -> None:
    item = ItemInput(
        item_idx=0,
        title="Blue Pen, 12 Pack",
        description=None,
        brand=None,
        categories=(),
        image_uri=None,
    )
    positive = Positive(
        item, "Pens", (Attribute(modality="text", name="colour", value="blue", is_key=True),), None
    )
    plan = InterventionPlan(
        interventions=[
            Intervention(modality="text", name="colour", from_value="blue", to_value="red")
        ]
    )
    generator = lexicon.LexiconNegatives(
        {}, {}, per_item=1, interventions=1, image_ratio=0.5, seed="s"
    )
    negative, completed = generator.complete(positive, plan)
    assert completed.text == "Title: Red Pen, 12 Pack"
    assert check(positive, negative, completed, plan) is None
    same = item.model_copy()
    assert check(positive, same, completed.model_copy(update={"text": item.text()}), plan) == (
        "the negative is the positive unchanged"
    )
    more = item.model_copy(update={"title": "Red Pen, 24 Pack"})
    reason = check(positive, more, completed.model_copy(update={"text": more.text()}), plan)
    assert reason is not None and "('quantity', '24')" in reason


def test_demo_negatives_change_only_key_features_in_both_modalities(root: str) -> None:
    store, ingest, ref = _build(_config(root, "negatives.max_cosine=0.99"))
    written = store.read_frame(ref, "negatives", NEGATIVES)
    negatives = written.filter(pl.col("kind") == "key")
    controls = written.filter(pl.col("kind") == "control")
    report = store.read_json(ref, "report.json")
    items = store.manifest("ingest", ingest.version).tables["items"].rows
    assert report["share_items_with_enough_valid"] == 1.0
    assert report["controls"]["share_items_with_enough_valid"] == 1.0
    for kind in (negatives, controls):
        valid = kind.filter(pl.col("status") == "valid")
        assert valid.height == 4 * items  # rejected candidates replaced by spares
        assert valid.get_column("cosine_to_positive").max() < 0.99  # type: ignore[operator]
        copies = kind.filter(pl.col("reason").str.starts_with("near-copy"))
        assert (copies.get_column("cosine_to_positive") >= 0.99).all()
    assert written.get_column("negative_id").is_unique().all()
    assert negatives.get_column("negative_id").is_unique().all()
    assert set(negatives.get_column("modality")) == {"text", "image"}
    assert abs(report["image_share_where_both_modalities"] - 0.5) <= 0.10
    assert (
        assert_only_intervened_changed(store, ingest, negatives)
        == negatives.filter(pl.col("status") == "valid").height
    )
    # every intervened attribute is a key feature of the positive's category
    attributes = store.read_frame(
        store.ref("attributes", plan_versions(_config(root))["attributes"]),
        "attributes",
        ATTRIBUTES,
    )
    keys = set(
        attributes.filter(pl.col("is_key")).select("item_idx", "modality", "name").iter_rows()
    )
    for row in negatives.iter_rows(named=True):
        for change in row["interventions"]:
            assert (row["item_idx"], change["modality"], change["name"]) in keys
    # the controls change attributes that are not key features, and nothing else
    assert (
        assert_only_intervened_changed(store, ingest, controls)
        == controls.filter(pl.col("status") == "valid").height
    )
    for row in controls.iter_rows(named=True):
        for change in row["interventions"]:
            assert (row["item_idx"], change["modality"], change["name"]) not in keys
    # the key negatives do not depend on whether controls are written
    _, _, alone = _build(_config(root, "negatives.max_cosine=0.99", "negatives.controls=false"))
    without = store.read_frame(alone, "negatives", NEGATIVES)
    assert set(without["kind"]) == {"key"}
    assert without.drop("prompt_version").equals(negatives.drop("prompt_version"))


def test_the_configured_modality_ratio_is_realised(root: str) -> None:
    store, _, ref = _build(_config(root, "negatives.image_ratio=0.25"))
    assert (
        abs(store.read_json(ref, "report.json")["image_share_where_both_modalities"] - 0.25) <= 0.10
    )


def test_a_new_round_is_a_new_version_beside_the_old(root: str) -> None:
    store, _, first = _build(_config(root))
    _, _, second = _build(_config(root, "negatives.round=2"))
    assert first.version != second.version
    assert store.versions("negatives") == [first.version, second.version]
    a = store.read_frame(first, "negatives", NEGATIVES)
    b = store.read_frame(second, "negatives", NEGATIVES)
    assert set(b.get_column("round")) == {2}
    assert a.get_column("text").to_list() != b.get_column("text").to_list()
    assert len(store.versions("attributes")) == 1 and len(store.versions("ingest")) == 1


def test_per_user_negatives(root: str) -> None:
    store, ingest, ref = _build(_config(root, "negatives.per_user=true", "negatives.per_item=2"))
    negatives = store.read_frame(ref, "negatives", NEGATIVES)
    train = store.read_frame(ingest, "interactions", INTERACTIONS)
    pairs = train.filter(pl.col("split") == "train").height
    assert negatives.get_column("user_idx").null_count() == 0
    valid = negatives.filter(pl.col("status") == "valid")
    assert dict(valid.group_by("kind").len().iter_rows()) == {
        "key": 2 * pairs,
        "control": 2 * pairs,
    }
    assert negatives.get_column("negative_id").is_unique().all()


def test_a_killed_run_resumes_to_the_same_negatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ["negatives.batch_size=50"]
    store, _, reference = _build(_config(str(tmp_path / "clean"), *settings))
    config = _config(str(tmp_path / "killed"), *settings)
    ingest = run_stage(config, "ingest", {}).ref
    attributes = run_stage(config, "attributes", {"ingest": ingest}).ref
    calls: list[int] = []
    original = lexicon.LexiconNegatives.plan

    def dies_in_the_third_batch(
        self: lexicon.LexiconNegatives, positive: Positive, user: int | None = None
    ) -> list[InterventionPlan]:
        calls.append(positive.item.item_idx)
        if len(calls) == 120:
            raise KeyboardInterrupt("killed")
        return original(self, positive, user)

    monkeypatch.setattr(lexicon.LexiconNegatives, "plan", dies_in_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, "negatives", {"ingest": ingest, "attributes": attributes})
    monkeypatch.setattr(lexicon.LexiconNegatives, "plan", original)
    resumed = run_stage(config, "negatives", {"ingest": ingest, "attributes": attributes}).ref
    assert resumed.version == reference.version
    a = open_store(config).read_frame(resumed, "negatives", NEGATIVES)
    b = store.read_frame(reference, "negatives", NEGATIVES)
    assert a.equals(b)
