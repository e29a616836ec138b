"""Which candidate negatives are kept: per unit, the first `per_item` in the generator's order
that are valid, not near-copies of their positive and not duplicates of an earlier candidate of
the unit, the rejected ones kept with their reason.

A unit's candidates are asked for in rounds, as many per round as it still needs, and the valid
ones of a round are measured together (one encoding call for the whole batch): a spare candidate
is generated (an LLM request) and encoded only when an earlier one was rejected. A near-copy is a
negative at least `max_cosine` close to its positive in the space the models see, its modalities
side by side (text, visual description, attribute text; the mean of their cosines): the
difference the model would learn from is almost nothing there. A duplicate makes the same changes
(modality, attribute, new value; case and spacing aside) as an earlier candidate: a model asked
for several negatives of one item can answer alike, and a repeat teaches nothing new.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from neggen_core.encoders.cached import AttributeRow, attribute_text, changed
from neggen_core.negatives.models import Generator, Outcome, Positive, Unit

# (positive, candidate) pairs -> their cosine, one per pair
Similarity = Callable[[Sequence[tuple[Positive, Outcome]]], np.ndarray]
NEAR_COPY = "near-copy"
DUPLICATE = "duplicate"


@dataclass(frozen=True)
class Examined:
    """A candidate that was looked at: its number among its unit's candidates, its outcome (the
    reason set where it was rejected as a near-copy) and its cosine to the positive (None where
    not measured)."""

    number: int
    outcome: Outcome
    cosine: float | None


def measured_rows(
    pairs: Sequence[tuple[Positive, Outcome]], with_attributes: bool
) -> list[tuple[str, str | None, str | None]]:
    """What is encoded to measure (positive, candidate) pairs, as `stacked_vectors` takes it:
    the positives' (text, visual description, attribute text) rows, then the candidates'. A
    candidate's attribute text is its positive's key attributes with its interventions (give
    a control's pairs their real positive, not the control view of it); without
    `with_attributes`, no attribute texts."""

    def attributes(positive: Positive, outcome: Outcome | None) -> str | None:
        if not with_attributes:
            return None
        rows: list[AttributeRow] = [
            (a.modality, a.name, a.value) for a in positive.attributes if a.is_key
        ]
        if outcome is not None:
            changes = [(c.modality, c.name, c.to_value) for c in outcome.plan.interventions]
            rows = changed(rows, changes)
        return attribute_text(rows)

    return [(p.item.text(), p.visual_description, attributes(p, None)) for p, _ in pairs] + [
        (o.completed.text, o.completed.visual_description, attributes(p, o)) for p, o in pairs
    ]


def near_copy(cosine: float, max_cosine: float) -> str:
    return f"{NEAR_COPY}: cosine {cosine:.4f} to its positive, at or above {max_cosine}"


def changes(outcome: Outcome) -> frozenset[tuple[str, str, str]]:
    """What a candidate changes, as its unit's candidates are compared: (modality, attribute,
    new value), case and spacing aside."""
    return frozenset(
        (c.modality, c.name.strip().lower(), c.to_value.strip().lower())
        for c in outcome.plan.interventions
    )


def screen(
    units: Sequence[Unit],
    generator: Generator,
    per_item: int,
    similarity: Similarity | None,
    max_cosine: float | None,
) -> list[list[Examined]]:
    """Per unit, the candidates examined, in order, until `per_item` are kept or the generator
    has no more (it has up to its own `per_item`). Each round asks the generator for as many
    candidates as each unit still lacks. Without `similarity` (or `max_cosine`) every valid
    candidate is kept, unmeasured. A valid candidate that repeats an earlier one's changes is
    rejected as a duplicate before it is measured."""
    examined: list[list[Examined]] = [[] for _ in units]
    seen: list[dict[frozenset[tuple[str, str, str]], int]] = [{} for _ in units]
    kept = [0] * len(units)
    next_at = [0] * len(units)
    exhausted = [False] * len(units)
    while True:
        asked = [
            (unit, range(next_at[unit], next_at[unit] + per_item - kept[unit]))
            for unit in range(len(units))
            if kept[unit] < per_item and not exhausted[unit]
        ]
        if not asked:
            break
        answers = generator.generate([(units[unit], numbers) for unit, numbers in asked])
        pending: list[tuple[int, int, Outcome]] = []  # (unit, number, candidate) to measure
        for (unit, numbers), outcomes in zip(asked, answers, strict=True):
            next_at[unit] = numbers.stop
            exhausted[unit] = len(outcomes) < len(numbers)
            for number, outcome in zip(numbers, outcomes, strict=False):
                if outcome.reason is None:
                    first = seen[unit].setdefault(changes(outcome), number)
                    if first != number:
                        repeat = f"{DUPLICATE}: the same changes as candidate {first}"
                        outcome = replace(outcome, reason=repeat)
                if outcome.reason is None:
                    pending.append((unit, number, outcome))
                else:
                    examined[unit].append(Examined(number, outcome, None))
        if similarity is None or max_cosine is None:
            cosines: list[float | None] = [None] * len(pending)
        else:
            pairs = [(units[unit][1], outcome) for unit, _, outcome in pending]
            cosines = [float(c) for c in similarity(pairs)] if pairs else []
        for (unit, number, outcome), cosine in zip(pending, cosines, strict=True):
            if cosine is not None and max_cosine is not None and cosine >= max_cosine:
                outcome = replace(outcome, reason=near_copy(cosine, max_cosine))
            else:
                kept[unit] += 1
            examined[unit].append(Examined(number, outcome, cosine))
    return [sorted(unit, key=lambda e: e.number) for unit in examined]
