"""Small synthetic office catalogues in `index_json` layout, one per category shape: the same
items and users, their categories written as comma paths ("Office Products, Paper, Notebooks"),
lists without the root (["Paper", "Notebooks"], one in five cut short), single fine-grained names
without separators ("Notebooks"), or missing.

Every item's title and description state some of its brand, colour, material, size, pack
quantity, style and length, as shops write them, and what its branch's items are for. Each fine
category has two planted key attributes, mostly those of its branch (related categories share
what matters); each user shops in a few fine categories of one branch and mostly picks the items
whose key values they prefer. Deterministic by seed.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

Shape = Literal["comma_paths", "lists", "single_strings", "missing"]
SHAPES: tuple[Shape, ...] = ("comma_paths", "lists", "single_strings", "missing")

ROOT = "Office Products"
TREE: dict[str, dict[str, str]] = {  # branch -> fine category -> the noun its titles use
    "Writing Supplies": {
        "Ballpoint Pens": "Ballpoint Pens",
        "Gel Pens": "Gel Pens",
        "Markers": "Permanent Markers",
        "Highlighters": "Highlighters",
        "Pencils": "Pencils",
        "Fountain Pens": "Fountain Pen",
        "Erasers": "Erasers",
        "Correction Tape": "Correction Tape",
    },
    "Paper": {
        "Notebooks": "Spiral Notebook",
        "Copy Paper": "Copy Paper",
        "Sticky Notes": "Sticky Notes",
        "Index Cards": "Index Cards",
        "Envelopes": "Envelopes",
        "Legal Pads": "Legal Pad",
        "Graph Paper": "Graph Paper",
        "Cardstock": "Cardstock",
    },
    "Desk Accessories": {
        "Desk Organizers": "Desk Organizer",
        "Staplers": "Stapler",
        "Tape Dispensers": "Tape Dispenser",
        "Scissors": "Scissors",
        "Letter Trays": "Letter Tray",
        "Pen Holders": "Pen Holder",
        "Paper Clips": "Paper Clips",
        "Hole Punches": "Hole Punch",
    },
    "Filing": {
        "Binders": "Ring Binder",
        "File Folders": "File Folders",
        "Sheet Protectors": "Sheet Protectors",
        "Storage Boxes": "Storage Box",
        "Clipboards": "Clipboard",
        "Expanding Files": "Expanding File",
        "Hanging Folders": "Hanging Folders",
        "Dividers": "Tab Dividers",
    },
    "Bags & Cases": {
        "Laptop Sleeves": "Laptop Sleeve",
        "Pencil Cases": "Pencil Case",
        "Backpacks": "Backpack",
        "Messenger Bags": "Messenger Bag",
        "Portfolios": "Portfolio",
        "Tote Bags": "Tote Bag",
        "Briefcases": "Briefcase",
        "Tablet Cases": "Tablet Case",
    },
    "Desk Lighting": {
        "Desk Lamps": "Desk Lamp",
        "Clip Lights": "Clip Light",
        "Floor Lamps": "Floor Lamp",
        "Night Lights": "Night Light",
        "Light Bulbs": "Light Bulbs",
        "Reading Lights": "Reading Light",
        "Magnifier Lamps": "Magnifier Lamp",
        "Lamp Shades": "Lamp Shade",
    },
}
VALUES: dict[str, tuple[str, ...]] = {
    "brand": (
        "Northbrook",
        "Papermint",
        "Inkwell",
        "Deskwise",
        "Fileton",
        "Brightline",
        "Oakridge",
        "Stacksmith",
        "Quillon",
        "Tidyway",
    ),
    "colour": ("black", "blue", "red", "green", "white", "grey", "pink", "yellow", "purple"),
    "material": ("plastic", "metal", "wood", "leather", "nylon", "cardboard", "aluminum"),
    "size": ("small", "medium", "large"),
    "quantity": ("1", "2", "3", "6", "12", "24"),
    "style": ("classic", "modern", "vintage", "professional"),
    "length": ("6 inch", "8 inch", "10 inch", "12 inch"),
}
USES: dict[str, tuple[str, ...]] = {  # what a branch's descriptions say of the item's use
    "Writing Supplies": (
        "Smooth ink flow for writing, sketching and journaling.",
        "Quick-drying ink that writes without skipping or smudging.",
        "A comfortable grip for long writing sessions.",
    ),
    "Paper": (
        "Acid-free pages take ink and toner without bleeding.",
        "Bright pages for printing, notes and everyday jotting.",
        "Perforated pages tear out cleanly for notes and lists.",
    ),
    "Desk Accessories": (
        "Keeps your desktop tidy and your essentials within reach.",
        "A weighted base stays put on the desktop.",
        "Declutters the workspace at home or at work.",
    ),
    "Filing": (
        "Keeps documents organised, labelled and protected.",
        "Holds loose documents and reports in order.",
        "Tabbed dividers sort documents by project.",
    ),
    "Bags & Cases": (
        "Padded compartments carry laptops, tablets and books.",
        "Zippered pockets and an adjustable strap for commuting.",
        "Water-resistant exterior protects your gear on the go.",
    ),
    "Desk Lighting": (
        "Bright, flicker-free illumination for reading and work.",
        "Energy-saving bulbs with an adjustable beam.",
        "Dimmable light reduces eye strain at night.",
    ),
}
FILLER = (
    "Built for everyday use at home, school or the office.",
    "Backed by a one-year warranty.",
    "A practical choice for busy desks.",
    "Easy to clean and to store.",
)


def _item_text(
    branch: str, noun: str, values: dict[str, str], rng: random.Random
) -> tuple[str, str]:
    """A title and a description that state most of the item's values, in varied order."""
    stated = [name for name in ("style", "colour", "material") if rng.random() < 0.85]
    title = " ".join(
        [values["brand"], *(values[name].title() for name in stated), noun]
        + ([f", {values['size'].title()}"] if rng.random() < 0.8 else [])
    ).replace(" ,", ",")
    if rng.random() < 0.8:
        title += f", {values['quantity']} Pack"
    parts = [f"A {values['material']} {noun.lower()} by {values['brand']}."]
    if rng.random() < 0.7:
        parts.append(f"Measures {values['length']} long.")
    if "colour" not in stated:
        parts.append(f"Finished in {values['colour']}.")
    parts += [*rng.sample(USES[branch], 2), rng.choice(FILLER)]
    return title, " ".join(parts)


def _categories(shape: Shape, branch: str, fine: str, idx: int) -> Any:
    if shape == "comma_paths":
        return f"{ROOT}, {branch}, {fine}"
    if shape == "lists":  # without the root, some cut short, as real ones are
        return [branch] if idx % 5 == 0 else [branch, fine]
    if shape == "single_strings":
        return fine
    return ""


def write_catalogue(
    folder: Path, shape: Shape, items: int = 400, users: int = 600, seed: int = 5
) -> tuple[Path, Path]:
    """Write `Shop.inter.json` and `Shop.item.json` into `folder`; (interactions, items).

    Fine categories differ in size as real ones do: within a branch, the k-th holds a share
    of its items proportional to 1/k (from about 25 items down to 3)."""
    rng = random.Random(seed)
    fine = [(branch, leaf, noun) for branch, kinds in TREE.items() for leaf, noun in kinds.items()]
    names = list(VALUES)
    branch_keys = {branch: rng.sample(names, 2) for branch in TREE}
    keys = {
        name: (branch_keys[branch][0], rng.choice(names))
        if rng.random() < 0.3
        else tuple(branch_keys[branch])
        for branch, name, _ in fine
    }
    per_branch = len(fine) // len(TREE)
    weights = [1 / (1 + position % per_branch) for position in range(len(fine))]
    catalogue: dict[str, dict[str, Any]] = {}
    placed: list[tuple[int, dict[str, str]]] = []
    by_category: dict[int, list[int]] = {}
    for idx in range(items):
        position = rng.choices(range(len(fine)), weights)[0]
        branch, category, noun = fine[position]
        values = {name: rng.choice(options) for name, options in VALUES.items()}
        title, description = _item_text(branch, noun, values, rng)
        catalogue[str(idx)] = {
            "title": title,
            "description": description,
            "brand": values["brand"],
            "categories": _categories(shape, branch, category, idx),
        }
        placed.append((position, values))
        by_category.setdefault(position, []).append(idx)
    histories: dict[str, list[int]] = {}
    for user in range(users):
        branch = rng.randrange(len(TREE))
        shops = rng.sample(range(branch * per_branch, (branch + 1) * per_branch), 4)
        liked = {name: rng.choice(options) for name, options in VALUES.items()}
        pool = [i for position in shops for i in by_category.get(position, [])]

        def appeal(idx: int, liked: dict[str, str] = liked) -> float:
            position, values = placed[idx]
            matches = sum(values[key] == liked[key] for key in keys[fine[position][1]])
            return 2.0 * matches + rng.gauss(0, 1)

        ranked = sorted(pool, key=appeal, reverse=True)
        histories[str(user)] = ranked[: rng.randint(5, 8)]
    inter, meta = folder / "Shop.inter.json", folder / "Shop.item.json"
    inter.write_text(json.dumps(histories))
    meta.write_text(json.dumps(catalogue))
    return inter, meta
