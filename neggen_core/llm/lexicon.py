"""Attribute lexicons and patterns for reading product text, and the named colour palette.

Each lexicon maps surface forms (lower case, matched on word boundaries) to a canonical value.
Patterns capture numbers with their units. Both are deliberately conservative: an attribute is
only reported when the text states it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "grey": (128, 128, 128),
    "silver": (192, 192, 200),
    "red": (200, 30, 40),
    "pink": (240, 130, 180),
    "orange": (240, 130, 20),
    "yellow": (235, 200, 30),
    "gold": (212, 175, 55),
    "green": (40, 150, 60),
    "teal": (0, 128, 128),
    "blue": (30, 70, 200),
    "navy": (20, 30, 90),
    "purple": (120, 50, 160),
    "brown": (120, 70, 30),
    "beige": (225, 205, 165),
}

_SYNONYMS: dict[str, dict[str, str]] = {
    "colour": {
        **{c: c for c in COLOUR_RGB},
        "gray": "grey",
        "charcoal": "grey",
        "navy blue": "navy",
        "light blue": "blue",
        "dark blue": "navy",
        "violet": "purple",
        "lavender": "purple",
        "tan": "beige",
        "ivory": "white",
        "cream": "beige",
        "clear": "clear",
        "transparent": "clear",
        "assorted colors": "assorted",
        "assorted colours": "assorted",
        "multicolor": "assorted",
        "multi-color": "assorted",
        "rainbow": "assorted",
    },
    "material": {
        m: m
        for m in (
            "cotton",
            "bamboo",
            "fleece",
            "silicone",
            "wool",
            "muslin",
            "plastic",
            "glass",
            "stainless steel",
            "steel",
            "aluminum",
            "metal",
            "wood",
            "leather",
            "paper",
            "cardboard",
            "vinyl",
            "rubber",
            "nylon",
            "polyester",
            "cork",
            "felt",
            "canvas",
            "acrylic",
            "ceramic",
            "foam",
            "mesh",
            "fabric",
            "bamboo fiber",
            "polypropylene",
        )
    }
    | {"wooden": "wood", "aluminium": "aluminum", "poly": "polypropylene", "kraft": "paper"},
    "pattern": {
        "solid": "solid",
        "striped": "striped",
        "stripes": "striped",
        "stripe": "striped",
        "polka dot": "polka dot",
        "polka dots": "polka dot",
        "dotted": "polka dot",
        "checked": "checked",
        "checkered": "checked",
        "plaid": "checked",
        "gingham": "checked",
        "floral": "floral",
        "chevron": "chevron",
        "camouflage": "camouflage",
        "animal print": "animal print",
        "geometric": "geometric",
    },
    "style": {
        s: s
        for s in (
            "classic",
            "modern",
            "vintage",
            "sporty",
            "retro",
            "rustic",
            "minimalist",
            "professional",
            "contemporary",
            "traditional",
            "decorative",
            "executive",
        )
    },
    "shape": {
        "round": "circle",
        "circle": "circle",
        "circular": "circle",
        "square": "square",
        "rectangular": "rectangle",
        "rectangle": "rectangle",
        "triangle": "triangle",
        "triangular": "triangle",
        "diamond": "diamond",
        "oval": "oval",
        "heart": "heart",
        "star": "star",
        "hexagonal": "hexagon",
        "hexagon": "hexagon",
    },
    "size": {
        "x-small": "extra small",
        "extra small": "extra small",
        "small": "small",
        "medium": "medium",
        "large": "large",
        "x-large": "extra large",
        "extra large": "extra large",
        "jumbo": "extra large",
        "mini": "small",
        "letter size": "letter",
        "letter-size": "letter",
        "legal size": "legal",
        "legal-size": "legal",
        "a4": "a4",
    },
    "tip": {
        "extra fine point": "extra fine",
        "extra-fine point": "extra fine",
        "fine point": "fine",
        "medium point": "medium",
        "bold point": "bold",
        "broad tip": "broad",
        "chisel tip": "chisel",
        "ultra fine": "extra fine",
        "fine tip": "fine",
    },
    "connectivity": {
        "wireless": "wireless",
        "bluetooth": "bluetooth",
        "wi-fi": "wi-fi",
        "wifi": "wi-fi",
        "usb": "usb",
        "corded": "corded",
        "cordless": "cordless",
    },
    "technology": {
        "inkjet": "inkjet",
        "laser": "laser",
        "thermal": "thermal",
        "dot matrix": "dot matrix",
        "led": "led",
        "lcd": "lcd",
        "monochrome": "monochrome",
        "color printer": "colour",
        "all-in-one": "all-in-one",
        "digital": "digital",
        "magnetic": "magnetic",
        "cross-cut": "cross-cut",
        "strip-cut": "strip-cut",
        "micro-cut": "micro-cut",
    },
    "scent": {
        s: s for s in ("lavender scent", "vanilla", "unscented", "fragrance-free", "citrus", "mint")
    },
    "flavour": {f: f for f in ("strawberry", "banana", "apple", "chocolate", "cherry")},
    "age range": {"newborn": "newborn", "infant": "infant", "toddler": "toddler"},
}


@dataclass(frozen=True)
class Found:
    name: str
    value: str
    start: int
    end: int


def _alternation(forms: list[str]) -> re.Pattern[str]:
    ordered = sorted(forms, key=len, reverse=True)
    body = "|".join(re.escape(f) for f in ordered)
    return re.compile(rf"(?<![\w-])({body})(?![\w-])", re.IGNORECASE)


_LEXICON_PATTERNS = {name: _alternation(list(forms)) for name, forms in _SYNONYMS.items()}

_NUMBER = r"(\d+(?:[.,]\d+)?)"
_COUNTED = "|".join(
    [
        "pack",
        "pk",
        "count",
        "ct",
        "pcs",
        "pieces?",
        "sheets?",
        "pages?",
        "pockets?",
        "per pack",
        "per box",
        "/box",
        "/pack",
        "rolls?",
        "pads?",
        "sets?",
        "labels?",
        "envelopes?",
        "pens?",
        "pencils?",
        "markers?",
        "cartridges?",
        "tabs?",
        "folders?",
        "sticks?",
        "handsets?",
        "drawers?",
        "shelves",
        "compartments?",
        "outlets?",
    ]
)
_PATTERNS: dict[str, list[tuple[re.Pattern[str], str]]] = {  # most specific first
    "quantity": [
        (re.compile(r"(?:pack|box|set|case|bag|carton) of (\d+)", re.I), "{0}"),
        (re.compile(rf"(\d+)[- ]?(?:{_COUNTED})\b", re.I), "{0}"),
        (re.compile(r"(\d+) dozen", re.I), "{0} dozen"),
    ],
    "dimensions": [
        (
            re.compile(
                rf"{_NUMBER}\s*(?:\"|inch(?:es)?|in\.?)?\s*[x\u00d7]\s*{_NUMBER}\s*(\"|inch(?:es)?|in\.?|cm|mm|ft|feet)?",
                re.I,
            ),
            "{0} x {1}",
        ),
    ],
    "capacity": [
        (
            re.compile(rf"{_NUMBER}[- ]?(oz|ounce|ounces|ml|l|liter|litre|gallon|quart)s?\b", re.I),
            "{0} {1}",
        ),
    ],
    "length": [
        (
            re.compile(rf"{_NUMBER}[- ]?(mm|cm|inch|inches|ft|feet|foot|yards?|meters?)\b", re.I),
            "{0} {1}",
        ),
    ],
    "weight": [
        (re.compile(rf"{_NUMBER}[- ]?(lb|lbs|pound|pounds|kg|g)\b", re.I), "{0} {1}"),
    ],
    "age range": [
        (re.compile(r"(\d+)\s*(?:-|to)\s*(\d+)\s*(months?|years?|yrs?)", re.I), "{0}-{1} {2}"),
    ],
}
_UNITS = {
    "ounce": "oz",
    "ounces": "oz",
    "liter": "l",
    "litre": "l",
    "inches": "inch",
    "feet": "ft",
    "foot": "ft",
    "yard": "yd",
    "yards": "yd",
    "meter": "m",
    "meters": "m",
    "months": "months",
    "month": "months",
    "years": "years",
    "year": "years",
    "yrs": "years",
    "yr": "years",
}


def _unit(text: str) -> str:
    low = text.lower().rstrip(".")
    return _UNITS.get(low, low)


def find_attributes(text: str) -> Iterator[Found]:
    """Every lexicon and pattern match in `text`. A lexicon match inside a longer one of another
    attribute belongs to that one ("Medium" in "Medium Point" is a pen tip, not a size); a
    pattern's match is blanked out for the patterns after it ("8.5 x 11 inches" is dimensions,
    not also a length of 11 inches)."""
    words = [
        Found(name, _SYNONYMS[name][match.group(1).lower()], match.start(), match.end())
        for name, pattern in _LEXICON_PATTERNS.items()
        for match in pattern.finditer(text)
    ]
    for hit in words:
        inside = any(
            o.name != hit.name
            and o.start <= hit.start
            and hit.end <= o.end
            and o.end - o.start > hit.end - hit.start
            for o in words
        )
        if not inside:
            yield hit
    for name, patterns in _PATTERNS.items():
        for pattern, template in patterns:
            for match in pattern.finditer(text):
                groups = [
                    _unit(g) if g and not g[0].isdigit() else (g or "") for g in match.groups()
                ]
                value = template.format(*groups).strip()
                yield Found(name, value.replace(",", "."), match.start(), match.end())
                text = (
                    text[: match.start()]
                    + " " * (match.end() - match.start())
                    + text[match.end() :]
                )


def nearest_colour(rgb: Sequence[float]) -> str:
    """The palette colour closest to an RGB triple."""
    r, g, b = (float(v) for v in rgb)
    return min(
        COLOUR_RGB,
        key=lambda n: (
            (COLOUR_RGB[n][0] - r) ** 2 + (COLOUR_RGB[n][1] - g) ** 2 + (COLOUR_RGB[n][2] - b) ** 2
        ),
    )


_RENDER = {"quantity": "{} pack"}
_UNIT_WORDS = {"m": "meters", "yd": "yards", "l": "liters"}


def render_value(name: str, value: str) -> str:
    """A surface form of `value` that `find_attributes` reads back as (name, value)."""
    if name in _SYNONYMS:
        forms = [form for form, canonical in _SYNONYMS[name].items() if canonical == value]
        return value if value in forms or not forms else forms[0]
    number, _, unit = value.rpartition(" ")
    if number and unit in _UNIT_WORDS:
        value = f"{number} {_UNIT_WORDS[unit]}"
    return _RENDER.get(name, "{}").format(value)


def rewrite(text: str, name: str, old: str, new: str) -> str:
    """`text` with every mention of attribute `name` valued `old` replaced by `new`, keeping a
    capitalised mention capitalised."""
    hits = list(find_attributes(text))
    others = [(h.start, h.end) for h in hits if h.name != name]
    spans = sorted(
        (hit.start, hit.end)
        for hit in hits
        if hit.name == name
        and hit.value == old
        # a mention inside another attribute's ("Medium" in "Medium Point") is that one's
        and not any(
            s <= hit.start and hit.end <= e and (s, e) != (hit.start, hit.end) for s, e in others
        )
    )
    surface = render_value(name, new)
    out, last = [], 0
    for start, end in spans:
        if start < last:
            continue
        original = text[start:end]
        replacement = surface.title() if original[:1].isupper() else surface
        out.append(text[last:start] + replacement)
        last = end
    return "".join(out) + text[last:]
