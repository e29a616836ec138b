"""Prompt templates, kept as package files; a template's version is the hash of its text."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources


@dataclass(frozen=True)
class Template:
    name: str
    text: str

    @property
    def version(self) -> str:
        """`prompt_version`: changes exactly when the template's text changes."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    def render(self, **values: str) -> str:
        return self.text.format(**values)


@cache
def load_template(name: str) -> Template:
    """A template from `neggen_core/llm/prompts/<name>.md`."""
    text = resources.files("neggen_core.llm").joinpath("prompts", f"{name}.md").read_text("utf-8")
    return Template(name, text)


DESCRIBE_EXTRACT = "describe_extract"
INTERVENE = "intervene"
COMPLETE = "complete"


def combined_version(*names: str) -> str:
    """One `prompt_version` for a stage that uses several templates."""
    joined = "+".join(load_template(name).version for name in names)
    return hashlib.sha256(joined.encode()).hexdigest()[:12]
