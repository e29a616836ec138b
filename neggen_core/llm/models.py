"""What goes into and comes out of the prompt templates, as pydantic models.

The JSON schema sent to a model (`response_format`) is generated from these models and every
reply is validated back through them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Modality = Literal["text", "image"]


class Attribute(BaseModel):
    """One attribute of an item, read from its text or seen in its image."""

    model_config = ConfigDict(extra="forbid")
    modality: Modality = Field(
        description="text: stated in the item's text; image: seen in its image"
    )
    name: str = Field(min_length=1, description="attribute name, lower case, e.g. colour, material")
    value: str = Field(min_length=1, description="the attribute's value, lower case, e.g. blue")
    is_key: bool = Field(
        description="true for the few attributes most likely to decide whether a user wants it"
    )


class Extraction(BaseModel):
    """Template 1's answer: what the image shows, and the item's attributes."""

    model_config = ConfigDict(extra="forbid")
    visual_description: str | None = Field(
        description="one or two sentences on what the image shows; null when there is no image"
    )
    attributes: list[Attribute] = Field(description="the item's attributes, text and image")


class ItemInput(BaseModel):
    """What template 1 is given about one item."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    item_idx: int
    title: str | None
    description: str | None
    brand: str | None
    categories: tuple[str, ...]
    image_uri: str | None

    def text(self) -> str:
        """The item's text as one block: title, brand, categories, description."""
        parts = [
            f"Title: {self.title}" if self.title else "",
            f"Brand: {self.brand}" if self.brand else "",
            f"Categories: {' > '.join(self.categories)}" if self.categories else "",
            f"Description: {self.description}" if self.description else "",
        ]
        return "\n".join(p for p in parts if p)

    @classmethod
    def from_text(cls, item_idx: int, text: str) -> ItemInput:
        """The inverse of `text()` (without the image): read an item back from its text."""
        fields: dict[str, str] = {}
        current = None
        for line in text.split("\n"):
            label, sep, rest = line.partition(": ")
            if (
                sep
                and label in ("Title", "Brand", "Categories", "Description")
                and (current != "Description")
            ):
                current, fields[label] = label, rest
            elif current is not None:
                fields[current] += "\n" + line
        return cls(
            item_idx=item_idx,
            title=fields.get("Title"),
            description=fields.get("Description"),
            brand=fields.get("Brand"),
            categories=tuple(fields["Categories"].split(" > ")) if "Categories" in fields else (),
            image_uri=None,
        )


Status = Literal["ok", "invalid"]


class ExtractionResult(BaseModel):
    """One item's outcome: the validated extraction, or why there is none."""

    model_config = ConfigDict(extra="forbid")
    item_idx: int
    status: Status
    reason: str | None = None
    extraction: Extraction | None = None
    image_problem: str | None = None  # why the item's image was not read (then: text only)


class Intervention(BaseModel):
    """One key feature changed: which, in which modality, from what to what."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    modality: Modality
    name: str = Field(min_length=1)
    from_value: str = Field(min_length=1)
    to_value: str = Field(min_length=1)


class InterventionPlan(BaseModel):
    """Template 2's answer: the key features to change and their contrasting values."""

    model_config = ConfigDict(extra="forbid")
    interventions: list[Intervention] = Field(min_length=1, max_length=2)


class CompletedNegative(BaseModel):
    """Template 3's answer: the negative item's description with the new values filled in."""

    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, description="the negative item's text, same style and length")
    visual_description: str | None = Field(
        description="what the negative item's image shows; null when the item has no image"
    )
