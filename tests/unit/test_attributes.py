"""The attributes stage with the lexicon backend: text, pixels, key features, resume."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from neggen_core.artifacts.schemas import ATTRIBUTES, DESCRIPTIONS, ITEMS, KEY_FEATURES
from neggen_core.config import NeggenConfig, load_config
from neggen_core.demo.generator import CATEGORIES, COLOURS, _draw
from neggen_core.llm.lexicon_backend import LexiconBackend, ZeroShot, read_image, read_text
from neggen_core.llm.models import ItemInput
from neggen_core.pipeline.run import run_stage
from neggen_core.pipeline.stages import open_store


def _config(root: str, *more: str) -> NeggenConfig:
    return load_config(None, [f"artifacts.root={root}", "llm.zero_shot=false", *more])


def _item(title: str, description: str = "", brand: str | None = None) -> ItemInput:
    return ItemInput(
        item_idx=0, title=title, description=description, brand=brand, categories=(), image_uri=None
    )


def test_text_attributes_from_lexicons_and_patterns() -> None:
    found = read_text(
        _item(
            "Paper Mate InkJoy Retractable Pens, Fine Point, Blue, 12 Pack",
            "Stainless steel clip. Measures 8.5 x 11 inches. 16 oz bottle.",
            brand="Paper Mate",
        )
    )
    assert {(a.name, a.value) for a in found} == {
        ("brand", "paper mate"),
        ("tip", "fine"),
        ("colour", "blue"),
        ("quantity", "12"),
        ("material", "stainless steel"),
        ("dimensions", "8.5 x 11"),
        ("capacity", "16 oz"),
    }
    assert all(a.modality == "text" and not a.is_key for a in found)
    # the title wins over the description
    assert {(a.name, a.value) for a in read_text(_item("Red Mug", "also sold in blue"))} == {
        ("colour", "red")
    }


def test_image_attributes_come_from_the_pixels(tmp_path: Path) -> None:
    path = tmp_path / "item.png"
    path.write_bytes(_draw("red", "triangle", "striped"))
    reading = read_image(Image.open(path))
    assert {(a.name, a.value) for a in reading.attributes} == {
        ("colour", "red"),
        ("shape", "triangle"),
        ("pattern", "striped"),
    }
    assert reading.description.startswith("The image shows a triangle object in red")

    pixels = np.asarray(Image.open(path).convert("RGB")).copy()
    red = np.all(pixels == COLOURS["red"], axis=2)
    pixels[red] = COLOURS["green"]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    recoloured = {(a.name, a.value) for a in read_image(Image.open(path)).attributes}
    assert ("colour", "green") in recoloured and ("colour", "red") not in recoloured


class FakeEncoder:
    """Unit vectors by keyword: "iron" texts point where "metal" labels do."""

    axes = ("metal", "plastic", "wood", "paper")

    def encode(self, sentences: list[str], **_: object) -> np.ndarray:
        vectors = np.zeros((len(sentences), len(self.axes) + 1), dtype=np.float32)
        for row, text in enumerate(sentences):
            text = text.lower().replace("iron", "metal")
            hits = [i for i, axis in enumerate(self.axes) if axis in text]
            vectors[row, hits[0] if hits else len(self.axes)] = 1.0
        return vectors


def test_zero_shot_fills_only_what_the_lexicons_missed() -> None:
    zero_shot = ZeroShot(FakeEncoder(), labels={"material": ("metal", "plastic", "wood", "paper")})
    items = [_item("Heavy iron stapler"), _item("Plastic ruler"), _item("A thing")]
    found = [read_text(item) for item in items]
    assert [[(a.name, a.value) for a in f] for f in found] == [[], [("material", "plastic")], []]
    zero_shot.fill(items, found)
    assert [[(a.name, a.value) for a in f] for f in found] == [
        [("material", "metal")],
        [("material", "plastic")],
        [],
    ]


def test_demo_images_are_read_and_planted_key_features_are_found(root: str) -> None:
    config = _config(root)
    ingest = run_stage(config, "ingest", {}).ref
    outcome = run_stage(config, "attributes", {"ingest": ingest})
    store = open_store(config)
    items = store.read_frame(ingest, "items", ITEMS)
    attributes = store.read_frame(outcome.ref, "attributes", ATTRIBUTES)
    descriptions = store.read_frame(outcome.ref, "descriptions", DESCRIPTIONS)

    # the image colour read from the pixels is the colour the description states
    stated = items.select(
        "item_idx", pl.col("description").str.extract(r" in (\w+) with a ").alias("stated")
    )
    seen = attributes.filter((pl.col("modality") == "image") & (pl.col("name") == "colour"))
    joined = seen.join(stated, on="item_idx")
    assert joined.height == items.height
    assert (joined.get_column("value") == joined.get_column("stated")).all()
    assert descriptions.filter(pl.col("modality") == "image").height == items.height
    assert descriptions.get_column("status").unique().to_list() == ["ok"]

    keys = store.read_frame(outcome.ref, "key_features", KEY_FEATURES)
    for path, _, planted in CATEGORIES.values():
        chosen = set(keys.filter(pl.col("category") == path[1]).get_column("name"))
        assert set(planted) <= chosen, (path[1], planted, chosen)
    report = store.read_json(outcome.ref, "report.json")
    assert report["share_with_key_attribute"] == 1.0
    assert report["attributes_per_modality"]["image"] == 3 * items.height
    marked = attributes.filter(pl.col("is_key")).get_column("item_idx").n_unique()
    assert marked == report["items_with_key_attribute"] == items.height


def test_a_killed_run_resumes_and_gives_the_same_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ["attributes.batch_size=64"]
    clean = _config(str(tmp_path / "clean"), *settings)
    ingest = run_stage(clean, "ingest", {}).ref
    reference = run_stage(clean, "attributes", {"ingest": ingest}).ref

    config = _config(str(tmp_path / "killed"), *settings)
    ingest = run_stage(config, "ingest", {}).ref
    calls: list[int] = []
    killed: list[bool] = []
    original = LexiconBackend.extract

    def dies_on_the_third_batch(self: LexiconBackend, items: list[ItemInput]) -> object:
        calls.append(len(items))
        if len(calls) == 3 and not killed:
            killed.append(True)
            raise KeyboardInterrupt("killed")
        return original(self, items)

    monkeypatch.setattr(LexiconBackend, "extract", dies_on_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run_stage(config, "attributes", {"ingest": ingest})
    store = open_store(config)
    assert store.versions("attributes") == []
    calls.clear()
    resumed = run_stage(config, "attributes", {"ingest": ingest}).ref
    batches = -(-store.manifest("ingest", ingest.version).tables["items"].rows // 64)
    assert len(calls) == batches - 2  # the two finished batches were not redone
    assert resumed.version == reference.version
    clean_store = open_store(clean)
    for table, schema in (
        ("attributes", ATTRIBUTES),
        ("descriptions", DESCRIPTIONS),
        ("key_features", KEY_FEATURES),
    ):
        a = store.read_table(resumed, table, schema)
        b = clean_store.read_table(reference, table, schema)
        if table == "descriptions":
            a, b = a.drop(["text"]), b.drop(["text"])  # image paths differ between the roots
        assert a.equals(b), table
    report = json.loads(Path(resumed.uri, "report.json").read_text())
    assert report["items_extracted"] == sum(calls)
