"""Templates 2 (intervene) and 3 (complete), answered offline, and the check of every negative.

Intervene: for each positive, pick key features (in the text or the image modality, spread by the
configured ratio) and, for each, a contrasting value: one the same category's items really have
(a number in the positive's own unit), that none of the positive's buyers chose in train where
another is left, drawn with weight growing with how many of the category's items have it and
how much it differs from the positive's (colours by RGB distance, numbers by log ratio, other
values by character trigrams). Ties go to the seeded draw, never to the alphabet. Complete:
rewrite the mentions of each changed value in the item's title and description (or the brand
field), or rewrite the visual description from the changed image attributes. Deterministic by
(seed, round, user, item).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence

from neggen_core.llm.lexicon import COLOUR_RGB, rewrite
from neggen_core.llm.lexicon_backend import describe_image, parse_image_description, read_text
from neggen_core.llm.models import (
    Attribute,
    CompletedNegative,
    Intervention,
    InterventionPlan,
    ItemInput,
)
from neggen_core.negatives.models import Outcome, Positive, Request, modality_order

# (category, modality, name) -> value -> how many of the category's items have it
Pools = Mapping[tuple[str, str, str], Mapping[str, int]]
# item -> (modality, name) -> the values its buyers chose
Chosen = Mapping[int, Mapping[tuple[str, str], frozenset[str]]]
POOL_SIZE = 8
MIN_DISSIMILARITY = 0.05  # a value as similar as can be still has this much weight
# a quantity: a number (or "8.5 x 11"), then its unit, if any
NUMBER = re.compile(r"(\d+(?:\.\d+)?)(?:\s*x\s*\d+(?:\.\d+)?)*\s*([a-z\"'][a-z\"'. ]*)?")


def _number(value: str) -> float | None:
    match = re.search(r"\d+(?:\.\d+)?", value)
    return float(match.group()) if match else None


def _unit(value: str) -> str | None:
    """The unit a numeric value is given in ("" for a bare number), None when not numeric."""
    match = NUMBER.fullmatch(value.strip().lower())
    return None if match is None else (match.group(2) or "").strip()


def _trigrams(value: str) -> set[str]:
    padded = f"  {value.lower()} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def dissimilarity(name: str, a: str, b: str) -> float:
    """How different two values of one attribute are, in [0, 1] (bigger: more different)."""
    if name == "colour" and a in COLOUR_RGB and b in COLOUR_RGB:
        return math.dist(COLOUR_RGB[a], COLOUR_RGB[b]) / math.dist((0, 0, 0), (255, 255, 255))
    x, y = _number(a), _number(b)
    if x is not None and y is not None and name != "brand":
        return min(1.0, abs(math.log((x + 1e-6) / (y + 1e-6))) / math.log(100))
    ta, tb = _trigrams(a), _trigrams(b)
    return 1.0 - len(ta & tb) / max(len(ta | tb), 1)


def contrasting_values(
    name: str,
    value: str,
    pool: Mapping[str, int],
    rng: random.Random,
    avoid: frozenset[str] = frozenset(),
) -> list[str]:
    """Up to `POOL_SIZE` of the pool's other values in the order drawn: without replacement,
    with weight (items having the value) x (its dissimilarity to `value`), by `rng`; the values
    in `avoid` (chosen by the positive's buyers) after all the others. A numeric value is
    replaced only by one in the same unit."""
    unit = _unit(value) if name != "brand" else None
    others = [v for v in sorted(pool) if v != value and (unit is None or _unit(v) == unit)]

    def drawn(values: list[str]) -> list[str]:
        # Efraimidis-Spirakis: the largest u ** (1 / w) first is a weighted draw without
        # replacement
        weight = {
            v: pool[v] * max(dissimilarity(name, value, v), MIN_DISSIMILARITY) for v in values
        }
        keyed = sorted(((rng.random() ** (1.0 / weight[v]), v) for v in values), reverse=True)
        return [v for _, v in keyed]

    fresh = drawn([v for v in others if v not in avoid])
    return (fresh + drawn([v for v in others if v in avoid]))[:POOL_SIZE]


def locatable(positive: Positive) -> list[Attribute]:
    """Key attributes a rewrite can change: text ones the text states (zero-shot values have
    no mention to replace), image ones the visual description states."""
    stated_text = {(a.name, a.value) for a in read_text(positive.item)}
    stated_image = set(parse_image_description(positive.visual_description or "").items())
    return [
        a
        for a in positive.attributes
        if a.is_key and (a.name, a.value) in (stated_text if a.modality == "text" else stated_image)
    ]


class LexiconNegatives:
    """Plans and completes negatives without a model."""

    name = "lexicon"
    model = "category-values+rewrite"

    def __init__(
        self,
        pools: Pools,
        brands: Mapping[str, str],
        per_item: int,
        interventions: int,
        image_ratio: float,
        seed: str,
        chosen: Chosen | None = None,
    ) -> None:
        self.pools = pools
        self.chosen = chosen or {}
        self.brands = brands
        self.per_item = per_item
        self.interventions = interventions
        self.image_ratio = image_ratio
        self.seed = seed

    def plan(self, positive: Positive, user_idx: int | None = None) -> list[InterventionPlan]:
        """Template 2: up to `per_item` distinct intervention plans for one positive."""
        rng = random.Random(f"{self.seed}:{user_idx}:{positive.item.item_idx}")
        options: dict[str, list[tuple[Attribute, list[str]]]] = {"text": [], "image": []}
        chosen = self.chosen.get(positive.item.item_idx, {})
        for attribute in locatable(positive):
            pool = self.pools.get((positive.category, attribute.modality, attribute.name), {})
            avoid = chosen.get((attribute.modality, attribute.name), frozenset())
            values = contrasting_values(attribute.name, attribute.value, pool, rng, avoid)
            if values:
                options[attribute.modality].append((attribute, values))
        order = modality_order(
            [m for m in ("text", "image") if options[m]], self.per_item, self.image_ratio, rng
        )
        plans: list[InterventionPlan] = []
        used: set[frozenset[tuple[str, str, str]]] = set()
        for modality in order:
            choice = self._pick(options[modality], used, rng) or self._pick(
                options["image" if modality == "text" else "text"], used, rng
            )
            if choice is None:
                break
            used.add(frozenset((i.modality, i.name, i.to_value) for i in choice))
            plans.append(InterventionPlan(interventions=choice))
            if len(plans) == self.per_item:
                break
        return plans

    def _pick(
        self,
        options: list[tuple[Attribute, list[str]]],
        used: set[frozenset[tuple[str, str, str]]],
        rng: random.Random,
    ) -> list[Intervention] | None:
        """A not yet used combination of `interventions` attributes and contrasting values,
        preferring the most different values."""
        if not options:
            return None
        attributes = options[:]
        rng.shuffle(attributes)
        count = min(self.interventions, len(attributes))
        chosen = attributes[:count]
        for depth in range(POOL_SIZE):
            picks = []
            for offset, (attribute, values) in enumerate(chosen):
                value = values[min(depth + offset * (depth % 2), len(values) - 1)]
                picks.append(
                    Intervention(
                        modality=attribute.modality,
                        name=attribute.name,
                        from_value=attribute.value,
                        to_value=value,
                    )
                )
            key = frozenset((i.modality, i.name, i.to_value) for i in picks)
            if key not in used:
                return picks
        for attribute, values in attributes:  # fall back to one attribute at a time
            for value in values:
                single = Intervention(
                    modality=attribute.modality,
                    name=attribute.name,
                    from_value=attribute.value,
                    to_value=value,
                )
                if frozenset({(single.modality, single.name, value)}) not in used:
                    return [single]
        return None

    def generate(self, requests: Sequence[Request]) -> list[list[Outcome]]:
        """The asked candidates of each unit, each checked."""
        outcomes = []
        for (user_idx, positive), numbers in requests:
            row = []
            for plan in self.plan(positive, user_idx)[numbers.start : numbers.stop]:
                negative, completed = self.complete(positive, plan)
                row.append(Outcome(plan, completed, check(positive, negative, completed, plan)))
            outcomes.append(row)
        return outcomes

    def complete(
        self, positive: Positive, plan: InterventionPlan
    ) -> tuple[ItemInput, CompletedNegative]:
        """Template 3: the negative item, its text and its visual description."""
        item = positive.item
        title, description, brand = item.title or "", item.description or "", item.brand
        image = parse_image_description(positive.visual_description or "")
        backdrop = _backdrop(positive.visual_description)
        for change in plan.interventions:
            if change.modality == "image":
                image[change.name] = change.to_value
            elif change.name == "brand" and brand:
                display = self.brands.get(change.to_value, change.to_value.title())
                pattern = re.compile(re.escape(brand.strip()), re.IGNORECASE)
                title, description = pattern.sub(display, title), pattern.sub(display, description)
                brand = display
            else:
                title = rewrite(title, change.name, change.from_value, change.to_value)
                description = rewrite(description, change.name, change.from_value, change.to_value)
        negative = item.model_copy(
            update={"title": title or None, "description": description or None, "brand": brand}
        )
        visual = positive.visual_description
        if any(change.modality == "image" for change in plan.interventions) and image:
            visual = describe_image(image["colour"], image["shape"], image["pattern"], backdrop)
        return negative, CompletedNegative(text=negative.text(), visual_description=visual)


def _backdrop(description: str | None) -> str:
    match = re.search(r"on an? (\w+) background", description or "")
    return match.group(1) if match else "white"


def check(
    positive: Positive, negative: ItemInput, completed: CompletedNegative, plan: InterventionPlan
) -> str | None:
    """Why a negative is not valid, or None: every intervened value must really change, the
    negative must differ from the positive, and its attributes, read again from its text and
    visual description, must equal the positive's except exactly the intervened ones."""
    for change in plan.interventions:
        if change.to_value == change.from_value:
            return f"{change.modality}:{change.name} keeps its value {change.from_value!r}"
    if (completed.text, completed.visual_description) == (
        positive.item.text(),
        positive.visual_description,
    ):
        return "the negative is the positive unchanged"
    for modality, before, after in (
        ("text", _text_values(positive.item), _text_values(negative)),
        (
            "image",
            parse_image_description(positive.visual_description or ""),
            parse_image_description(completed.visual_description or ""),
        ),
    ):
        expected = dict(before)
        for change in plan.interventions:
            if change.modality == modality:
                expected[change.name] = change.to_value
        if after != expected:
            differing = sorted(set(after.items()) ^ set(expected.items()))
            return f"{modality} attributes read back differ from the intended ones: {differing}"
    return None


def _text_values(item: ItemInput) -> dict[str, str]:
    return {a.name: a.value for a in read_text(item)}
