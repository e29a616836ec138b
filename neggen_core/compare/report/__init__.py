"""The comparison report: the verdict, one document of blocks rendered as Markdown and as
self-contained HTML, and the figures."""

from neggen_core.compare.report.comparison import Comparison
from neggen_core.compare.report.document import Bullets, Figure, Heading, Table
from neggen_core.compare.report.render import html_page, markdown, render
from neggen_core.compare.report.verdict import verdict

__all__ = [
    "Bullets",
    "Comparison",
    "Figure",
    "Heading",
    "Table",
    "html_page",
    "markdown",
    "render",
    "verdict",
]
