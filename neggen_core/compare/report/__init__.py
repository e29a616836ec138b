"""The comparison report: the verdict, one document of blocks rendered as Markdown and as
self-contained HTML, and the figures."""

from neggen_core.compare.report.comparison import Comparison
from neggen_core.compare.report.document import (
    Block,
    Bullets,
    Figure,
    Heading,
    Paragraph,
    Table,
    blocks,
)
from neggen_core.compare.report.render import html_page, markdown, render
from neggen_core.compare.report.verdict import verdict

__all__ = [
    "Block",
    "Bullets",
    "Comparison",
    "Figure",
    "Heading",
    "Paragraph",
    "Table",
    "blocks",
    "html_page",
    "markdown",
    "render",
    "verdict",
]
