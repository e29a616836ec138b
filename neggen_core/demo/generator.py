"""A synthetic Amazon-2014-format catalogue with planted key-feature preferences.

Every item has a category and attributes (colour, material, pattern, size, style, shape); its
title and description name them and its PNG image shows them (fill colour, shape, pattern). Each
category has two *key* attributes; every user prefers one value of each key attribute of the
categories they shop in, and picks items mostly by those preferences, so a recommender that
learns the key features has something real to gain. `planted.json` records the truth.

Deterministic by seed: the same (scale, seed) writes byte-identical files.
"""

from __future__ import annotations

import gzip
import io
import json
import posixpath
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import fsspec
import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from neggen_core.artifacts.store import uri_of

DEMO_VERSION = 2
REVIEWS_FILE = "reviews_Demo_5.json.gz"
META_FILE = "meta_Demo.json.gz"
PLANTED_FILE = "planted.json"
IMAGE_SIZE = 64
BACKGROUND = (250, 250, 250)

Scale = Literal["small", "baby"]


@dataclass(frozen=True)
class ScaleSpec:
    users: int
    items: int
    interactions: int


SCALES: dict[str, ScaleSpec] = {
    "small": ScaleSpec(users=600, items=300, interactions=6_000),
    "baby": ScaleSpec(users=19_445, items=7_050, interactions=160_792),
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 40),
    "blue": (30, 70, 200),
    "green": (40, 150, 60),
    "yellow": (235, 200, 30),
    "pink": (240, 130, 180),
    "purple": (120, 50, 160),
    "orange": (240, 130, 20),
    "grey": (128, 128, 128),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "material": ("cotton", "bamboo", "fleece", "silicone", "wool", "muslin", "plastic", "glass"),
    "pattern": ("solid", "striped", "polka dot", "checked"),
    "size": ("small", "medium", "large"),
    "style": ("classic", "modern", "vintage", "sporty"),
    "shape": ("circle", "square", "triangle", "diamond"),
}
CATEGORIES: dict[str, tuple[tuple[str, ...], str, tuple[str, str]]] = {
    "blankets": (
        ("Baby Products", "Nursery", "Bedding", "Blankets"),
        "Blanket",
        ("colour", "material"),
    ),
    "bottles": (
        ("Baby Products", "Feeding", "Bottle-Feeding", "Bottles"),
        "Feeding Bottle",
        ("material", "size"),
    ),
    "bodysuits": (("Baby Products", "Apparel", "Bodysuits"), "Bodysuit", ("colour", "pattern")),
    "plush": (("Baby Products", "Toys", "Plush Toys"), "Plush Toy", ("colour", "shape")),
    "towels": (("Baby Products", "Bathing", "Towels"), "Hooded Towel", ("material", "pattern")),
    "carriers": (("Baby Products", "Gear", "Carriers"), "Baby Carrier", ("colour", "style")),
}
BRANDS = (
    "Little Lark",
    "Moonbeam",
    "Tiny Tots",
    "Cozy Cub",
    "Bloom & Bear",
    "Nestling",
    "Puddle Duck",
    "Sunny Sprout",
    "Honeybee",
    "Wee Wonders",
    "Dreamy Owl",
    "Pebble",
    "Maple Kids",
    "Snugglebug",
)
FILLER = (
    "Machine washable and gentle on sensitive skin.",
    "Designed with parents in mind for everyday use.",
    "Makes a thoughtful gift for baby showers.",
    "Free of BPA, phthalates and lead.",
    "Tested to meet international safety standards.",
    "Lightweight and easy to pack for travel.",
)
WORDS = ("love", "great", "soft", "cute", "perfect", "sturdy", "nice", "bright", "easy", "handy")


@dataclass(frozen=True)
class DemoFiles:
    """Where a generated demo catalogue lies and how big it is."""

    folder: str
    reviews: str
    meta: str
    users: int
    items: int
    interactions: int


def _paint_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    fill: int | tuple[int, int, int] | None,
    outline: tuple[int, int, int] | None = None,
) -> None:
    lo, hi, mid = 8, IMAGE_SIZE - 8, IMAGE_SIZE // 2
    if shape == "circle":
        draw.ellipse((lo, lo, hi, hi), fill=fill, outline=outline, width=2)
    elif shape == "square":
        draw.rectangle((lo, lo, hi, hi), fill=fill, outline=outline, width=2)
    elif shape == "triangle":
        draw.polygon([(mid, lo), (hi, hi), (lo, hi)], fill=fill, outline=outline, width=2)
    else:
        corners = [(mid, lo - 2), (hi + 2, mid), (mid, hi + 2), (lo - 2, mid)]
        draw.polygon(corners, fill=fill, outline=outline, width=2)


def _draw(colour: str, shape: str, pattern: str) -> bytes:
    """A PNG of the item: its outlined shape, filled with its colour, overlaid with its pattern
    in a contrasting tone that also stands out from the light background."""
    size = (IMAGE_SIZE, IMAGE_SIZE)
    fill = COLOURS[colour]
    body = Image.new("RGB", size, fill)
    pen = ImageDraw.Draw(body)
    contrast = (190, 190, 190) if sum(fill) < 380 else (40, 40, 40)
    if pattern == "striped":
        for x in range(0, IMAGE_SIZE, 8):
            pen.rectangle((x, 0, x + 2, IMAGE_SIZE), fill=contrast)
    elif pattern == "polka dot":
        for x in range(6, IMAGE_SIZE, 12):
            for y in range(6, IMAGE_SIZE, 12):
                pen.rectangle((x - 1, y - 1, x + 1, y + 1), fill=contrast)
    elif pattern == "checked":
        for x in range(0, IMAGE_SIZE, 8):
            for y in range(0, IMAGE_SIZE, 8):
                if (x + y) // 8 % 2:
                    pen.rectangle((x + 1, y + 1, x + 6, y + 6), fill=contrast)
    mask = Image.new("L", size, 0)
    _paint_shape(ImageDraw.Draw(mask), shape, 255)
    image = Image.new("RGB", size, BACKGROUND)
    image.paste(body, mask=mask)
    _paint_shape(ImageDraw.Draw(image), shape, None, outline=(90, 90, 90))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _ids(rng: np.random.Generator, count: int, prefix: str, length: int) -> list[str]:
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        draws = rng.integers(0, len(alphabet), size=(count, length))
        for row in alphabet[draws]:
            ident = prefix + "".join(row)
            if ident not in seen:
                seen.add(ident)
                out.append(ident)
                if len(out) == count:
                    break
    return out


def _interactions_per_user(
    rng: np.random.Generator, spec: ScaleSpec, minimum: int = 5
) -> np.ndarray:
    extra = spec.interactions - minimum * spec.users
    weights = rng.gamma(0.6, size=spec.users)
    counts = rng.multinomial(extra, weights / weights.sum())
    return np.minimum(counts + minimum, spec.items // 2)


def generate_demo(
    out: str, scale: Scale = "small", seed: int = 7, progress: bool = True
) -> DemoFiles:
    """Write the demo catalogue (Amazon 2014 raw format, gzip) into `out` (path or fsspec URI)."""
    spec = SCALES[scale]
    rng = np.random.default_rng(seed)
    fs, root = fsspec.core.url_to_fs(out)
    fs.makedirs(posixpath.join(root, "images"), exist_ok=True)

    category_names = list(CATEGORIES)
    item_category = rng.integers(0, len(category_names), size=spec.items)
    item_attrs = {
        name: rng.integers(0, len(values), size=spec.items) for name, values in ATTRIBUTES.items()
    }
    asins = _ids(rng, spec.items, "B00", 7)
    brands = rng.integers(0, len(BRANDS), size=spec.items)
    prices = np.round(rng.lognormal(3.0, 0.5, size=spec.items), 2)
    popularity = rng.lognormal(0.0, 0.6, size=spec.items)

    meta_lines = []
    for i in tqdm(
        range(spec.items), desc="demo items", disable=None if progress else True, unit="item"
    ):
        path, noun, _ = CATEGORIES[category_names[item_category[i]]]
        a = {name: ATTRIBUTES[name][item_attrs[name][i]] for name in ATTRIBUTES}
        title = (
            f"{BRANDS[brands[i]]} {a['style'].title()} {a['colour'].title()} "
            f"{a['material'].title()} {noun}, {a['pattern'].title()}, {a['size'].title()}"
        )
        filler = " ".join(FILLER[j] for j in rng.choice(len(FILLER), size=2, replace=False))
        description = (
            f"A {a['size']} {noun.lower()} made of {a['material']} in {a['colour']} with a "
            f"{a['pattern']} pattern and a {a['shape']} motif. Its {a['style']} style suits any "
            f"nursery. {filler}"
        )
        image = f"images/{asins[i]}.png"
        with fs.open(posixpath.join(root, image), "wb") as handle:
            handle.write(_draw(a["colour"], a["shape"], a["pattern"]))
        record = {
            "asin": asins[i],
            "title": title,
            "description": description,
            "brand": BRANDS[brands[i]],
            "categories": [list(path)],
            "price": float(prices[i]),
            "imUrl": image,
        }
        meta_lines.append(repr(record))

    n_per_user = _interactions_per_user(rng, spec)
    n_cats = len(category_names)
    user_cats = np.stack([rng.permutation(n_cats)[:2] for _ in range(spec.users)])
    attr_names = list(ATTRIBUTES)
    # every user's preferred value of every attribute; only a category's key attributes count
    user_pref = np.stack(
        [rng.integers(0, len(ATTRIBUTES[name]), size=spec.users) for name in attr_names], axis=1
    )
    key_attr = np.array(
        [
            [attr_names.index(CATEGORIES[category_names[c]][2][j]) for c in item_category]
            for j in (0, 1)
        ]
    )
    key_value = np.stack([item_attrs[attr_names[a]] for a in range(len(attr_names))])[
        key_attr, np.arange(spec.items)[None, :]
    ]
    reviewer_ids = _ids(rng, spec.users, "A", 13)
    log_pop = np.log(popularity)

    picked_users: list[np.ndarray] = []
    picked_items: list[np.ndarray] = []
    picked_hits: list[np.ndarray] = []
    chunk = 1024
    for lo in tqdm(
        range(0, spec.users, chunk),
        desc="demo users",
        disable=None if progress else True,
        unit="chunk",
    ):
        users = np.arange(lo, min(lo + chunk, spec.users))
        in_cat = (item_category[None, :] == user_cats[users, 0:1]) | (
            item_category[None, :] == user_cats[users, 1:2]
        )
        prefs = user_pref[users]
        matches = (prefs[:, key_attr[0]] == key_value[0]).astype(np.float32) + (
            prefs[:, key_attr[1]] == key_value[1]
        )
        scores = log_pop[None, :] + 1.5 * in_cat + 2.5 * matches
        scores += rng.gumbel(size=scores.shape).astype(np.float32)
        counts = n_per_user[users]
        k = int(counts.max())
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        best_first = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1), 1)
        # each user keeps their best `count` items, in a random (time) order
        shuffle = rng.random(best_first.shape) + (np.arange(k)[None, :] >= counts[:, None])
        picked = np.take_along_axis(best_first, np.argsort(shuffle, axis=1), 1)
        keep = np.arange(k)[None, :] < counts[:, None]
        rows = np.nonzero(keep)[0]
        picked_users.append(users[rows])
        picked_items.append(picked[keep])
        picked_hits.append(matches[rows, picked[keep]])

    user_of = np.concatenate(picked_users)
    item_of = np.concatenate(picked_items)
    hits = np.concatenate(picked_hits)
    start = int(datetime(2013, 1, 1, tzinfo=UTC).timestamp())
    gaps = rng.integers(3_600, 40 * 86_400, size=len(user_of))
    first_of_user = np.r_[True, user_of[1:] != user_of[:-1]]
    cumulative = np.cumsum(gaps)
    times = (
        start + cumulative - np.maximum.accumulate(np.where(first_of_user, cumulative - gaps, 0))
    )
    ratings = np.clip(np.rint(2.5 + hits + rng.normal(0, 0.7, size=len(user_of))), 1, 5)
    words = np.array(WORDS)[rng.integers(0, len(WORDS), size=(len(user_of), 6))]
    review_lines = [
        json.dumps(
            {
                "reviewerID": reviewer_ids[u],
                "asin": asins[i],
                "reviewerName": f"Parent {u}",
                "helpful": [0, 0],
                "reviewText": f"This {' '.join(w)} product.",
                "overall": float(r),
                "summary": w[0].title(),
                "unixReviewTime": int(t),
                "reviewTime": datetime.fromtimestamp(int(t), UTC).strftime("%m %d, %Y"),
            }
        )
        for u, i, r, t, w in zip(user_of, item_of, ratings, times, words, strict=True)
    ]

    def write_gzip(name: str, lines: list[str]) -> str:
        path = posixpath.join(root, name)
        with fs.open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
            handle.write(("\n".join(lines) + "\n").encode("utf-8"))
        return path

    reviews = write_gzip(REVIEWS_FILE, review_lines)
    meta = write_gzip(META_FILE, meta_lines)
    planted = {
        "generator_version": DEMO_VERSION,
        "scale": scale,
        "seed": seed,
        "key_attributes": {name: list(keys) for name, (_, _, keys) in CATEGORIES.items()},
        "category_paths": {name: list(path) for name, (path, _, _) in CATEGORIES.items()},
    }
    with fs.open(posixpath.join(root, PLANTED_FILE), "w") as handle:
        json.dump(planted, handle, indent=2, sort_keys=True)
    return DemoFiles(
        folder=uri_of(fs, root),
        reviews=uri_of(fs, reviews),
        meta=uri_of(fs, meta),
        users=spec.users,
        items=spec.items,
        interactions=len(review_lines),
    )
