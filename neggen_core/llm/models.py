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


Status = Literal["ok", "invalid"]


class ExtractionResult(BaseModel):
    """One item's outcome: the validated extraction, or why there is none."""

    model_config = ConfigDict(extra="forbid")
    item_idx: int
    status: Status
    reason: str | None = None
    extraction: Extraction | None = None
