"""The lexicon backend: deterministic, CPU-only, no network.

Text: attribute lexicons and patterns over the title and description (the title wins when both
state a value), the brand field, and, where the lexicons are silent on material and style,
zero-shot matching with the bundled sentence encoder (all-MiniLM-L6-v2). Image: Pillow analysis
of the pixels (background, dominant colour, shape from the silhouette, pattern from the contrast
pixels), which also writes the visual description. `is_key` is left false here: the attributes
stage marks the key features from users' train interactions (`neggen_core.attributes.keys`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from neggen_core.encoders.text import SentenceModel
from neggen_core.images import ImagePolicy, ImageRefused, pixel_grid, silhouette
from neggen_core.llm.lexicon import COLOUR_RGB, find_attributes, nearest_colour
from neggen_core.llm.models import Attribute, Extraction, ExtractionResult, ItemInput

ZERO_SHOT_LABELS: dict[str, tuple[str, ...]] = {
    "material": (
        "plastic",
        "metal",
        "wood",
        "paper",
        "cardboard",
        "fabric",
        "leather",
        "glass",
        "rubber",
        "cotton",
        "silicone",
    ),
    "style": ("classic", "modern", "vintage", "sporty", "professional", "decorative"),
}
ZERO_SHOT_MIN_SIMILARITY = 0.45
ZERO_SHOT_MIN_MARGIN = 0.04


@dataclass(frozen=True)
class ImageReading:
    description: str
    attributes: list[Attribute]


def _shape(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    fill = box.mean()
    aspect = box.shape[1] / box.shape[0]
    widths = box.sum(axis=1)
    widest = np.argmax(widths) / max(len(widths) - 1, 1)
    if fill > 0.9:
        return "square" if 0.8 < aspect < 1.25 else "rectangle"
    if fill > 0.7:
        return "circle" if 0.8 < aspect < 1.25 else "oval"
    if widest > 0.75 or widest < 0.25:
        return "triangle"
    return "diamond"


def _erode(mask: np.ndarray, steps: int) -> np.ndarray:
    """The mask without its outer `steps` pixels (an outline is not a pattern)."""
    inner = mask.copy()
    for _ in range(steps):
        shrunk = inner.copy()
        shrunk[1:] &= inner[:-1]
        shrunk[:-1] &= inner[1:]
        shrunk[:, 1:] &= inner[:, :-1]
        shrunk[:, :-1] &= inner[:, 1:]
        inner = shrunk
    return inner


def _pattern(pixels: np.ndarray, mask: np.ndarray, fill: np.ndarray) -> str:
    mask = _erode(mask, 3)
    distance = np.abs(pixels.astype(np.int32) - fill.astype(np.int32)).sum(axis=2)
    contrast = (distance > 90) & mask
    share = contrast.sum() / max(mask.sum(), 1)
    if share < 0.03:
        return "solid"
    for axis in (0, 1):
        depth = mask.sum(axis=axis)
        full = (contrast.sum(axis=axis) > 0.8 * depth) & (depth >= 8)
        if full.sum() >= 0.2 * (depth >= 8).sum():
            return "striped"
    return "checked" if share > 0.16 else "polka dot"


_DESCRIBED = re.compile(
    r"The image shows an? (?P<shape>\w+) object in (?P<colour>\w+)"
    r"(?: with a (?P<pattern>[\w ]+?) pattern)? on an? \w+ background\."
)


def describe_image(colour: str, shape: str, pattern: str, backdrop: str) -> str:
    """The visual description of an object of this colour, shape and pattern."""
    article = "an" if shape[0] in "aeiou" else "a"
    return (
        f"The image shows {article} {shape} object in {colour}"
        + ("" if pattern == "solid" else f" with a {pattern} pattern")
        + f" on a {backdrop} background."
    )


def parse_image_description(text: str) -> dict[str, str]:
    """The colour, shape and pattern a `describe_image` text states (empty when it is not one)."""
    match = _DESCRIBED.search(text)
    if not match:
        return {}
    return {
        "colour": match["colour"],
        "shape": match["shape"],
        "pattern": match["pattern"] or "solid",
    }


def read_image(image: Image.Image) -> ImageReading:
    """What the image shows: its dominant colour, the shape of its silhouette, its pattern."""
    pixels = pixel_grid(image)
    mask, background = silhouette(pixels)
    if mask.sum() < 0.02 * mask.size:
        colour = nearest_colour(tuple(background))
        return ImageReading(
            f"The image is plain {colour}, with no distinct object.",
            [Attribute(modality="image", name="colour", value=colour, is_key=False)],
        )
    foreground = pixels[mask]
    named = np.array([nearest_colour(tuple(p)) for p in np.unique(foreground, axis=0)])
    unique, inverse = np.unique(foreground, axis=0, return_inverse=True)
    counts: dict[str, int] = {}
    for name, n in zip(named, np.bincount(inverse.ravel()), strict=True):
        counts[str(name)] = counts.get(str(name), 0) + int(n)
    colour = max(counts, key=lambda c: (counts[c], c))
    fill = np.array(COLOUR_RGB[colour])
    fill_pixels = unique[named == colour]
    if len(fill_pixels):
        fill = fill_pixels[np.argmax(np.bincount(inverse.ravel())[named == colour])]
    shape = _shape(mask)
    pattern = _pattern(pixels, mask, fill)
    description = describe_image(colour, shape, pattern, nearest_colour(tuple(background)))
    attributes = [
        Attribute(modality="image", name="colour", value=colour, is_key=False),
        Attribute(modality="image", name="shape", value=shape, is_key=False),
        Attribute(modality="image", name="pattern", value=pattern, is_key=False),
    ]
    return ImageReading(description, attributes)


def read_text(item: ItemInput) -> list[Attribute]:
    """Attributes the item's text states: lexicons and patterns, title before description."""
    chosen: dict[str, str] = {}
    brand = re.compile(re.escape(item.brand.strip()), re.IGNORECASE) if item.brand else None
    for text in (item.title or "", item.description or ""):
        if brand is not None:
            text = brand.sub(" ", text)  # "Paper Mate" pens are not made of paper
        found = sorted(find_attributes(text), key=lambda f: f.start)
        for hit in found:
            chosen.setdefault(hit.name, hit.value)
    if item.brand:
        chosen["brand"] = item.brand.strip().lower()
    return [
        Attribute(modality="text", name=name, value=value, is_key=False)
        for name, value in sorted(chosen.items())
    ]


@dataclass
class ZeroShot:
    """Zero-shot value matching with a sentence encoder, for attributes the lexicons missed."""

    encoder: SentenceModel
    labels: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(ZERO_SHOT_LABELS))

    def __post_init__(self) -> None:
        self._label_vectors = {
            name: self.encoder.encode(
                [
                    f"a product made of {v}" if name == "material" else f"a {v} style product"
                    for v in values
                ],
                normalize_embeddings=True,
            )
            for name, values in self.labels.items()
        }

    def fill(self, items: Sequence[ItemInput], found: list[list[Attribute]]) -> None:
        """Add a zero-shot value to each item whose text attributes lack one, in place. Only
        titles are encoded (a description costs the encoder ten times more for little gain)."""
        lacking = [
            row
            for row, attributes in enumerate(found)
            if not set(self.labels) <= {a.name for a in attributes}
        ]
        if not lacking:
            return
        texts = [items[row].title or (items[row].description or "")[:120] for row in lacking]
        vectors = self.encoder.encode(texts, normalize_embeddings=True, batch_size=64)
        for name, label_vectors in self._label_vectors.items():
            similarity = vectors @ label_vectors.T
            order = np.argsort(-similarity, axis=1)
            for position, row in enumerate(lacking):
                attributes = found[row]
                if any(a.name == name for a in attributes):
                    continue
                first, runner_up = order[position, 0], order[position, 1]
                best, second = similarity[position, first], similarity[position, runner_up]
                if best >= ZERO_SHOT_MIN_SIMILARITY and best - second >= ZERO_SHOT_MIN_MARGIN:
                    value = self.labels[name][first]
                    attributes.append(
                        Attribute(modality="text", name=name, value=value, is_key=False)
                    )


class LexiconBackend:
    """Template 1 answered from the data itself, without a model server."""

    name = "lexicon"
    marks_keys = False

    def __init__(self, zero_shot: ZeroShot | None, images: ImagePolicy) -> None:
        self.zero_shot = zero_shot
        self.images = images
        self.model = "lexicon+pillow" + ("+all-MiniLM-L6-v2" if zero_shot else "")
        self._items = 0

    @property
    def source(self) -> str:
        return f"{self.name}/{self.model}"

    def stats(self) -> dict[str, Any]:
        return {"requests_sent": 0, "cache_hits": 0, "items_extracted": self._items}

    def extract(self, items: Sequence[ItemInput]) -> list[ExtractionResult]:
        self._items += len(items)
        text_attributes = [read_text(item) for item in items]
        if self.zero_shot is not None and items:
            self.zero_shot.fill(items, text_attributes)
        results = []
        for item, attributes in zip(items, text_attributes, strict=True):
            description, problem = None, None
            if item.image_uri:
                try:
                    reading = read_image(self.images.load(item.image_uri))
                except ImageRefused as exc:
                    problem = str(exc)
                else:
                    description = reading.description
                    attributes = attributes + reading.attributes
            extraction = Extraction(visual_description=description, attributes=attributes)
            results.append(
                ExtractionResult(
                    item_idx=item.item_idx,
                    status="ok",
                    extraction=extraction,
                    image_problem=problem,
                )
            )
        return results
