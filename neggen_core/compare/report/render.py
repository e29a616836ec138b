"""The document rendered as Markdown and as self-contained HTML: both lay out the same blocks, so
the two files always say the same thing. Figures are PNG files beside `report.md` and inlined
into `report.html` as data URIs."""

from __future__ import annotations

import base64
import html
import re

from neggen_core.compare.report.comparison import Comparison
from neggen_core.compare.report.document import (
    Block,
    Bullets,
    Heading,
    Paragraph,
    Table,
    blocks,
)
from neggen_core.compare.report.figures import figures

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 1180px; margin: 2em auto; padding: 0 1em;
       color: #1d2430; }
h1 { font-size: 1.7em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #d6dbe3; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #d6dbe3; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f6; } td strong { color: #0b5d1e; }
tr:nth-child(even) td { background: #f8f9fb; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #e3e6eb; }
figcaption { color: #59626f; font-size: 13px; }
"""


def _md_cell(text: str, bold: bool) -> str:
    text = text.replace("|", "\\|")
    return f"**{text}**" if bold and text else text


def markdown(document: list[Block]) -> str:
    out: list[str] = []
    for block in document:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
            for r, row in enumerate(block.rows):
                cells = [_md_cell(c, (r, i) in block.bold) for i, c in enumerate(row)]
                lines.append("| " + " | ".join(cells) + " |")
            out.append("\n".join(lines))
        else:
            out.append(f"![{block.caption}]({block.file})\n\n*{block.caption}*")
    return "\n\n".join(out) + "\n"


def _inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(text))


def html_page(title: str, document: list[Block], images: dict[str, bytes]) -> str:
    """One page, its figures (`images`, by file name) inlined."""
    body: list[str] = []
    for block in document:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join(
                "<tr>"
                + "".join(
                    f"<td><strong>{html.escape(c)}</strong></td>"
                    if (r, i) in block.bold and c
                    else f"<td>{html.escape(c)}</td>"
                    for i, c in enumerate(row)
                )
                + "</tr>"
                for r, row in enumerate(block.rows)
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        else:
            data = base64.b64encode(images[block.file]).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(block.caption)}" '
                f'src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def render(comparison: Comparison) -> dict[str, bytes]:
    """report.md, report.html and the PNG figures, by file name."""
    images = figures(comparison)
    document = blocks(comparison)
    title = f"NegGen comparison: {comparison.config.dataset.name}"
    return {
        **images,
        "report.md": markdown(document).encode("utf-8"),
        "report.html": html_page(title, document, images).encode("utf-8"),
    }
