"""The demo catalogue: deterministic, images that show the attributes, planted preferences."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from neggen_core.demo.generator import ATTRIBUTES, CATEGORIES, COLOURS, generate_demo

PATTERN = (
    r"^A (?<size>\w+) (?<noun>.+?) made of (?<material>\w+) in (?<colour>\w+) with a "
    r"(?<pattern>[\w ]+?) pattern and a (?<shape>\w+) motif\. Its (?<style>\w+) style"
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo(str(out), "small", 7, progress=False)
    return out


def _items(folder: Path) -> pl.DataFrame:
    lines = gzip.decompress((folder / "meta_Demo.json.gz").read_bytes()).decode().splitlines()
    records = [ast.literal_eval(line) for line in lines]
    frame = pl.DataFrame(
        {
            "asin": [r["asin"] for r in records],
            "category": [r["categories"][0][-1] for r in records],
            "description": [r["description"] for r in records],
            "image": [r["imUrl"] for r in records],
        }
    )
    return frame.with_columns(pl.col("description").str.extract_groups(PATTERN).alias("a")).unnest(
        "a"
    )


def test_same_seed_same_bytes(demo: Path, tmp_path: Path) -> None:
    files = generate_demo(str(tmp_path), "small", 7, progress=False)
    assert (files.users, files.items, files.interactions) == (600, 300, 6000)
    for name in ("reviews_Demo_5.json.gz", "meta_Demo.json.gz", "planted.json"):
        assert (tmp_path / name).read_bytes() == (demo / name).read_bytes()
    images = sorted(p.name for p in (demo / "images").iterdir())
    assert len(images) == 300
    assert (tmp_path / "images" / images[0]).read_bytes() == (
        demo / "images" / images[0]
    ).read_bytes()
    other = generate_demo(str(tmp_path / "other"), "small", 8, progress=False)
    assert (Path(other.reviews)).read_bytes() != (demo / "reviews_Demo_5.json.gz").read_bytes()


def test_images_show_colour_and_shape(demo: Path) -> None:
    items = _items(demo)
    assert items.get_column("colour").null_count() == 0
    for row in items.iter_rows(named=True):
        image = Image.open(demo / row["image"]).convert("RGB")
        colours = sorted(image.getcolors(4096), reverse=True)
        foreground = [c for _, c in colours if c != (250, 250, 250)]
        assert foreground[0] == COLOURS[row["colour"]], row["asin"]
        covered = sum(n for n, c in colours if c != (250, 250, 250)) / (64 * 64)
        # a square covers the most of the canvas, a triangle the least
        expected = {
            "square": (0.55, 0.62),
            "circle": (0.42, 0.5),
            "diamond": (0.32, 0.37),
            "triangle": (0.27, 0.31),
        }
        low, high = expected[row["shape"]]
        assert low < covered < high, (row["asin"], row["shape"], covered)


def _concentration(frame: pl.DataFrame, attribute: str) -> float:
    """Mean share of a user's most frequent value of `attribute` (users with 3+ interactions)."""
    per_user = (
        frame.group_by("reviewerID", attribute)
        .len()
        .group_by("reviewerID")
        .agg(
            (pl.col("len").max() / pl.col("len").sum()).alias("share"),
            pl.col("len").sum().alias("n"),
        )
        .filter(pl.col("n") >= 3)
    )
    return float(per_user.get_column("share").mean())


def test_users_prefer_the_key_attributes_of_a_category(demo: Path) -> None:
    items = _items(demo)
    reviews = pl.read_ndjson(gzip.decompress((demo / "reviews_Demo_5.json.gz").read_bytes()))
    planted = json.loads((demo / "planted.json").read_text())
    joined = reviews.join(items, on="asin")
    lifts: dict[bool, list[float]] = {True: [], False: []}
    for name, (path, _, keys) in CATEGORIES.items():
        assert planted["key_attributes"][name] == list(keys)
        in_category = joined.filter(pl.col("category") == path[-1])
        # the same items, handed to users at random: what concentration chance alone gives
        shuffled = in_category.with_columns(pl.col("reviewerID").shuffle(seed=1))
        for attribute in ATTRIBUTES:
            lift = _concentration(in_category, attribute) / _concentration(shuffled, attribute)
            lifts[attribute in keys].append(lift)
            if attribute in keys:
                assert lift > 1.1, (name, attribute, lift)
    key, other = (sum(v) / len(v) for v in (lifts[True], lifts[False]))
    assert key > 1.2 and other < 1.05, (key, other)
