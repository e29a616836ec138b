"""The comparison report: one document rendered as Markdown and as self-contained HTML.

The content is built once as blocks (headings, paragraphs, lists, tables, figures); `markdown`
and `html` only render them, so the two files always say the same thing. Figures are PNG files
beside `report.md` and inlined into `report.html` as data URIs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from neggen_core.compare.plan import describe
from neggen_core.compare.stats import PairedTest
from neggen_core.config import NeggenConfig

METRIC_COLUMNS = (
    ("recall", 10),
    ("recall", 20),
    ("recall", 50),
    ("ndcg", 10),
    ("ndcg", 20),
    ("ndcg", 50),
)
SIGNIFICANCE = 0.05


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    bold: frozenset[tuple[int, int]] = frozenset()  # (row, column) cells to mark


@dataclass(frozen=True)
class Figure:
    file: str
    caption: str


Block = Heading | Paragraph | Bullets | Table | Figure


@dataclass
class Comparison:
    """Everything the report shows, read from the compare artifact's inputs."""

    config: NeggenConfig
    comparison: pl.DataFrame  # one row per run, split, metric and cut-off
    summary: pl.DataFrame
    grid: pl.DataFrame
    curves: pl.DataFrame
    tests: list[PairedTest]
    chosen: dict[str, dict[str, Any]]
    search: list[dict[str, Any]]  # per searched method: points trained, grid size, sampler taken
    upstream: dict[str, Any]
    negatives: pl.DataFrame  # the key negatives
    items: pl.DataFrame  # item_idx, text, visual: what the embeddings stage encoded
    versions: dict[str, str]
    software: dict[str, Any]

    # --- figures from the tables ---------------------------------------------------------

    def methods(self) -> list[str]:
        return self.summary["method"].unique(maintain_order=True).to_list()

    def value(self, method: str, split: str, metric: str, k: int) -> tuple[float, float]:
        row = self.summary.filter(
            (pl.col("method") == method)
            & (pl.col("split") == split)
            & (pl.col("metric") == metric)
            & (pl.col("k") == k)
        )
        return float(row["mean"][0]), float(row["std"][0])

    def table(self, split: str) -> dict[str, dict[str, dict[str, float]]]:
        """{method: {metric@k: {mean, std}}} for one split."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for row in self.summary.filter(pl.col("split") == split).iter_rows(named=True):
            out.setdefault(row["method"], {})[f"{row['metric']}@{row['k']}"] = {
                "mean": row["mean"],
                "std": row["std"],
            }
        return out

    @staticmethod
    def is_neggen(method: str) -> bool:
        return method.startswith("neggen(")

    def per_seed(self, method: str, metric: str, k: int) -> list[tuple[int, float]]:
        """(seed, test value) of each of the method's runs."""
        rows = self.comparison.filter(
            (pl.col("method") == method)
            & (pl.col("split") == "test")
            & (pl.col("metric") == metric)
            & (pl.col("k") == k)
        ).sort("seed")
        return list(zip(rows["seed"].to_list(), rows["value"].to_list(), strict=True))

    def verdict(self) -> dict[str, Any]:
        """For every NegGen method: is it significantly above the best baseline of its backbone
        (chosen on valid), and above its controls, after Holm's correction over every test; the
        first line answers that for NegGen on LightGCN (or the first NegGen)."""
        methods = list(dict.fromkeys(t.method for t in self.tests))
        if not methods:
            return {
                "lines": ["No NegGen method with a baseline or a control to test it against."],
                "neggen": None,
            }
        main = next((m for m in methods if m.startswith("neggen(lightgcn)")), methods[0])
        lines: list[str] = []
        result: dict[str, Any] = {"neggen": main, "comparisons": []}
        for method in [main, *(m for m in methods if m != main)]:
            for role in ("best baseline", "real_only", "random_intervention"):
                tests = [t for t in self.tests if t.method == method and t.role == role]
                if not tests:
                    continue
                line, above = _verdict_line(method, role, tests)
                result["comparisons"].append(
                    {"method": method, "against": tests[0].baseline, "role": role, "above": above}
                )
                if method == main and role == "best baseline":
                    result["beats_best_baseline"] = above
                    line = f"**{line}**"
                lines.append(line)
        r20, n20 = self.value(main, "test", "recall", 20), self.value(main, "test", "ndcg", 20)
        result.update({"recall@20": r20[0], "ndcg@20": n20[0]})
        lines.append(
            f"{main}: test Recall@20 {r20[0]:.4f} ± {r20[1]:.4f}, NDCG@20 {n20[0]:.4f} ± "
            f"{n20[1]:.4f} (mean ± std over seeds; per seed below)."
        )
        if "lightgcn+rns" in self.methods():
            base = self.value("lightgcn+rns", "test", "recall", 20)[0]
            result["over_lightgcn_rns"] = r20[0] / base - 1 if base else float("nan")
            lines.append(
                f"Against lightgcn+rns ({base:.4f}): {result['over_lightgcn_rns']:+.1%} "
                "Recall@20 (means, not tested)."
            )
        peers = []
        for peer in self.config.compare.peers:
            peers.append(
                {
                    "name": peer.name,
                    "above_on_both": r20[0] > peer.recall_20 and n20[0] > peer.ndcg_20,
                }
            )
            lines.append(
                f"Against {peer.name}, measured elsewhere ({peer.source}; no paired test is "
                f"possible): Recall@20 {r20[0]:.4f} vs {peer.recall_20:.4f} "
                f"({_above(r20[0], peer.recall_20)}), NDCG@20 {n20[0]:.4f} vs "
                f"{peer.ndcg_20:.4f} ({_above(n20[0], peer.ndcg_20)})."
            )
        result["peers"] = peers
        ablations = [m for m in self.methods() if m.startswith(main.partition("+")[0] + "[")]
        if ablations:
            lines.append(
                "Ablations, test Recall@20: "
                + "; ".join(f"{m}: {self.value(m, 'test', 'recall', 20)[0]:.4f}" for m in ablations)
                + f" (full model {r20[0]:.4f})."
            )
        result["lines"] = lines
        return result

    # --- the document ----------------------------------------------------------------------

    def blocks(self) -> list[Block]:
        config = self.config
        seeds = int(self.summary["seeds"].max() or 0)
        verdict = self.verdict()
        blocks: list[Block] = [
            Heading(1, f"NegGen comparison: {config.dataset.name}"),
            Paragraph(
                f"{len(self.methods())} methods x {seeds} seeds on one split and one evaluator "
                "(full ranking, train items masked). Every method is tuned with the same budget "
                f"({config.compare.budget} search points) and chosen on valid Recall@20 only; "
                "test figures are the mean ± standard deviation over seeds, and every claim "
                "below rests on a paired test over the test users with Holm's correction. Data: "
                + ", ".join(f"{k} {v}" for k, v in self.versions.items())
                + "."
            ),
            Heading(2, "Verdict"),
            Bullets(tuple(verdict["lines"])),
        ]
        if self.tests:
            blocks += [
                Heading(2, "Significance"),
                Paragraph(
                    "Paired randomisation (sign-flip) tests over the test users, per-user "
                    "metrics averaged over the seeds; Holm's correction over all "
                    f"{len(self.tests)} tests; significant: adjusted p < {SIGNIFICANCE:.0%}."
                ),
                self._tests_table(),
                Figure(
                    "differences.png",
                    "Paired differences (method - baseline or control) with 95% intervals, "
                    "per test; Holm-adjusted p beside each.",
                ),
            ]
        blocks += [
            Heading(2, f"Test results (mean ± std over {seeds} seeds)"),
            self._results_table(),
        ]
        if config.compare.peers:
            blocks += [
                Paragraph("Measured elsewhere (not by this pipeline), on the same split:"),
                Table(
                    ("Model", "Recall@20", "NDCG@20", "Source"),
                    tuple(
                        (p.name, f"{p.recall_20:.4f}", f"{p.ndcg_20:.4f}", p.source)
                        for p in config.compare.peers
                    ),
                ),
            ]
        blocks += [
            Heading(2, "Per seed (test)"),
            self._seeds_table(),
            Heading(2, "Training curves"),
            Figure(
                "curves.png",
                "Valid Recall@20 per epoch (first seed); the stopping rule watches this curve.",
            ),
            Heading(2, "Hyper-parameters (same budget, chosen on valid only)"),
            *self._grid_blocks(),
            Heading(2, "Generated negatives"),
            *self._negatives_blocks(),
            Heading(2, "Dataset"),
            self._dataset_table(),
            Heading(2, "Software"),
            self._software_table(),
        ]
        return blocks

    def _seeds_table(self) -> Table:
        methods = self.methods()
        seeds = sorted({seed for m in methods for seed, _ in self.per_seed(m, "recall", 20)})
        rows = []
        for method in methods:
            cells = [method]
            for metric in ("recall", "ndcg"):
                values = dict(self.per_seed(method, metric, 20))
                cells += [f"{values[s]:.4f}" if s in values else "" for s in seeds]
            rows.append(tuple(cells))
        header = (
            "Method",
            *(f"R@20 seed {s}" for s in seeds),
            *(f"N@20 seed {s}" for s in seeds),
        )
        return Table(header, tuple(rows))

    def _software_table(self) -> Table:
        software = self.software
        commit = software.get("commit") or "not a git checkout"
        if software.get("dirty"):
            commit += " (with uncommitted changes)"
        rows = [("neggen", str(software.get("neggen"))), ("commit", commit)]
        rows.append(("python", str(software.get("python"))))
        rows += [(name, str(v)) for name, v in software.get("libraries", {}).items()]
        return Table(("", "Version"), tuple(rows))

    def _results_table(self) -> Table:
        methods = self.methods()
        header = (
            "Method",
            *(f"{m.upper() if m == 'ndcg' else m.title()}@{k}" for m, k in METRIC_COLUMNS),
            "Valid R@20",
            "Best epoch",
            "Train s",
        )
        rows = []
        best: set[tuple[int, int]] = set()
        for c, (metric, k) in enumerate(METRIC_COLUMNS, start=1):
            means = [self.value(m, "test", metric, k)[0] for m in methods]
            best |= {(r, c) for r, v in enumerate(means) if v == max(means)}
        valid = [self.value(m, "valid", "recall", 20)[0] for m in methods]
        best |= {(r, len(METRIC_COLUMNS) + 1) for r, v in enumerate(valid) if v == max(valid)}
        for method in methods:
            cells = [method]
            for metric, k in METRIC_COLUMNS:
                mean, std = self.value(method, "test", metric, k)
                cells.append(f"{mean:.4f} ± {std:.4f}")
            first = self.summary.filter(pl.col("method") == method).row(0, named=True)
            cells += [
                f"{self.value(method, 'valid', 'recall', 20)[0]:.4f}",
                f"{first['best_epoch']:.0f}",
                f"{first['train_seconds']:.0f}",
            ]
            rows.append(tuple(cells))
        return Table(header, tuple(rows), frozenset(best))

    def _tests_table(self) -> Table:
        rows, bold = [], set()
        for r, t in enumerate(self.tests):
            significant = t.p_holm is not None and t.p_holm < SIGNIFICANCE
            rows.append(
                (
                    t.method,
                    t.role,
                    t.baseline,
                    t.metric,
                    f"{t.mean_a:.4f}",
                    f"{t.mean_b:.4f}",
                    f"{t.difference:+.4f} ({t.relative:+.1%})",
                    f"[{t.ci_low:+.4f}, {t.ci_high:+.4f}]",
                    f"{t.p_value:.4f}",
                    f"{t.p_holm:.4f}",
                    "yes" if significant else "no",
                )
            )
            if significant:
                bold.add((r, 10))
        return Table(
            (
                "Method",
                "Against",
                "Baseline / control",
                "Metric",
                "Method mean",
                "Other mean",
                "Difference",
                "95% interval",
                "p",
                "Holm p",
                "Significant",
            ),
            tuple(rows),
            frozenset(bold),
        )

    def _grid_blocks(self) -> list[Block]:
        grid = self.config.compare.grid
        text = "; ".join(
            f"{name}: " + ", ".join(f"{k.rsplit('.', 1)[-1]} in {list(v)}" for k, v in keys.items())
            for name, keys in grid.items()
        )
        search = Table(
            ("Method", "Points trained", "Grid points", "Real negatives taken from"),
            tuple(
                (
                    row["method"],
                    str(row["points"]),
                    str(row["grid_points"]),
                    row["sampler_from"] or "",
                )
                for row in self.search
            ),
        )
        rows, bold = [], set()
        for r, row in enumerate(self.grid.iter_rows(named=True)):
            params = json.loads(row["params"])
            rows.append(
                (
                    row["method"],
                    describe(params),
                    f"{row['valid_recall_20']:.4f}",
                    f"{row['valid_ndcg_20']:.4f}",
                    str(row["best_epoch"]),
                    "chosen" if row["chosen"] else "",
                )
            )
            if row["chosen"]:
                bold |= {(r, 1), (r, 2), (r, 5)}
        return [
            Paragraph(
                f"Budget: {self.config.compare.budget} points per method, the same for every "
                "method (its whole grid where that has fewer; a seeded random sample where it "
                f"has more). Grids: {text or 'none'}. Every point is trained with the first "
                "seed; the best valid Recall@20 is kept. NegGen's ablations and controls are "
                "searched as NegGen is, each on its own; NegGen and its ablations take the real "
                "negatives (rns, dns or ahns) of the baseline of their backbone with the best "
                "valid Recall@20, with that baseline's chosen values."
                + (
                    " Backbones not in compare.grid_backbones take the values chosen on "
                    f"{self.config.compare.grid_backbones[0]}."
                    if self.config.compare.grid_backbones
                    else ""
                )
            ),
            search,
            Table(
                ("Method", "Values", "Valid R@20", "Valid N@20", "Best epoch", ""),
                tuple(rows),
                frozenset(bold),
            ),
        ]

    def _negatives_blocks(self) -> list[Block]:
        report = self.upstream.get("negatives", {})
        embeddings = self.upstream.get("embeddings", {})
        statuses = report.get("statuses", {})
        invalid = report.get("invalid_reasons", {})
        summary = [
            f"{report.get('negatives', 0):,} generated for {report.get('items', 0):,} items: "
            + ", ".join(f"{n:,} {s}" for s, n in sorted(statuses.items())),
            "per modality: "
            + ", ".join(f"{m} {n:,}" for m, n in sorted(report.get("per_modality", {}).items())),
            f"possible false negatives (exact match or cosine ≥ "
            f"{self.config.embeddings.near_duplicate_threshold} to another real item): "
            f"{embeddings.get('possible_false_negatives', 0):,}"
            + (
                "; left out of training"
                if self.config.train.neggen.skip_possible_false_negatives
                else ""
            ),
            f"items without a negative: {report.get('items_without_negatives', 0):,}",
        ]
        controls = report.get("controls")
        if controls:
            summary.append(
                f"controls (the random_intervention ablation's negatives, changing attributes "
                f"that are not key features): {controls.get('negatives', 0):,}, "
                + ", ".join(f"{n:,} {s}" for s, n in sorted(controls.get("statuses", {}).items()))
            )
        if invalid:
            summary.append("invalid: " + ", ".join(f"{r} ({n:,})" for r, n in invalid.items()))
        similarity = embeddings.get("similarity_to_positive")
        if similarity:
            summary.append(
                "cosine to its positive: median "
                f"{similarity['p50']:.3f}, 10th-90th percentile "
                f"{similarity['p10']:.3f}-{similarity['p90']:.3f}"
            )
        return [
            Bullets(tuple(summary)),
            Figure("negatives.png", "Generated negatives per intervened attribute."),
            Paragraph("Examples: a real item and a negative generated from it."),
            self._examples_table(),
        ]

    def _examples_table(self) -> Table:
        """One valid negative per intervened attribute (the first by id), with its positive's
        content in the intervened modality."""
        valid = self.negatives.filter(pl.col("status") == "valid").with_columns(
            pl.col("interventions").list.first().struct.field("name").alias("attribute")
        )
        picked = (
            valid.sort("negative_id")
            .group_by("attribute", maintain_order=True)
            .first()
            .head(self.config.compare.examples)
            .join(self.items.rename({"text": "item_text", "visual": "item_visual"}), on="item_idx")
        )
        rows = []
        for row in picked.iter_rows(named=True):
            image = row["modality"] == "image"
            changes = "; ".join(
                f"{c['modality']} {c['name']}: {c['from_value']} → {c['to_value']}"
                for c in row["interventions"]
            )
            rows.append(
                (
                    _clip(row["item_visual"] if image else row["item_text"]),
                    _clip(row["visual_description"] if image else row["text"]),
                    changes,
                )
            )
        return Table(("Real item", "Generated negative", "Changed"), tuple(rows))

    def _dataset_table(self) -> Table:
        ingest = self.upstream.get("ingest", {})
        embeddings = self.upstream.get("embeddings", {})
        coverage = embeddings.get("coverage", {})
        users, items, interactions = (
            ingest.get("users", 0),
            ingest.get("items", 0),
            ingest.get("interactions", 0),
        )
        split = ingest.get("split", {})
        rows = [
            ("Users", f"{users:,}"),
            ("Items", f"{items:,}"),
            ("Interactions", f"{interactions:,}"),
            (
                "Train / valid / test",
                " / ".join(f"{split.get(s, 0):,}" for s in ("train", "valid", "test")),
            ),
            ("Density", f"{interactions / (users * items):.4%}" if users and items else "n/a"),
            ("Items with an image", f"{ingest.get('items_with_image', 0):,}"),
            ("Text vectors (items)", f"{coverage.get('text', 0):,}"),
            ("Visual-description vectors (items)", f"{coverage.get('visual_description', 0):,}"),
            ("Image features (items)", f"{coverage.get('image_features', 0):,}"),
            ("Text encoder", str(embeddings.get("encoder", "n/a"))),
        ]
        return Table(("", "Value"), tuple(rows))


def _verdict_line(method: str, role: str, tests: list[PairedTest]) -> tuple[str, bool]:
    """One comparison of the verdict, and whether the method is significantly above on every
    tested metric."""

    def significant(t: PairedTest) -> bool:
        return t.p_holm is not None and t.p_holm < SIGNIFICANCE

    above = all(t.difference > 0 and significant(t) for t in tests)
    below = any(t.difference < 0 and significant(t) for t in tests)
    word = (
        "significantly above"
        if above
        else "significantly below"
        if below
        else "not significantly different from"
    )
    backbone = method.partition("(")[2].partition(")")[0]
    baseline = tests[0].baseline
    what = (
        f"the best {backbone} baseline, {baseline} (the best valid Recall@20)"
        if role == "best baseline"
        else f"its {role} control, {baseline}"
    )
    figures = "; ".join(
        f"{t.metric} {t.mean_a:.4f} vs {t.mean_b:.4f}, {t.difference:+.4f} ({t.relative:+.1%}), "
        f"95% interval [{t.ci_low:+.4f}, {t.ci_high:+.4f}], p = {t.p_value:.4f}, "
        f"Holm-adjusted p = {t.p_holm:.4f}"
        for t in tests
    )
    return f"{method} is {word} {what} at 5% after Holm: {figures}.", above


def _above(ours: float, theirs: float) -> str:
    return "above" if ours > theirs else "below" if ours < theirs else "equal"


def _clip(text: str, limit: int = 220) -> str:
    flat = " · ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


# --- rendering -----------------------------------------------------------------------------


def _md_cell(text: str, bold: bool) -> str:
    text = text.replace("|", "\\|")
    return f"**{text}**" if bold and text else text


def markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
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


def html_page(title: str, blocks: list[Block], figures: dict[str, bytes]) -> str:
    body: list[str] = []
    for block in blocks:
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
            data = base64.b64encode(figures[block.file]).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(block.caption)}" '
                f'src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block.caption)}</figcaption></figure>"
            )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title><style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


# --- figures -------------------------------------------------------------------------------


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def figures(comparison: Comparison) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out: dict[str, bytes] = {}
    tests = comparison.tests
    metrics = list(dict.fromkeys(t.metric for t in tests)) or ["recall@20"]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(6.5 * len(metrics), 0.5 * max(len(tests), 2) + 1.4), sharey=True
    )
    axes = [axes] if len(metrics) == 1 else list(axes)
    for ax, metric in zip(axes, metrics, strict=True):
        part = [t for t in tests if t.metric == metric]
        labels = [f"{t.method} vs {t.baseline}" for t in part]
        y = list(range(len(part)))
        for row, t in zip(y, part, strict=True):
            significant = t.p_holm is not None and t.p_holm < SIGNIFICANCE
            colour = "#2f6db5" if significant else "#8a94a3"
            ax.errorbar(
                t.difference,
                row,
                xerr=[[t.difference - t.ci_low], [t.ci_high - t.difference]],
                fmt="o",
                color=colour,
                capsize=4,
            )
            ax.annotate(
                f"Holm p {t.p_holm:.3f}",
                (t.ci_high, row),
                xytext=(6, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color=colour,
            )
        ax.axvline(0, color="#b5472f", linewidth=1)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xlabel(f"paired difference in test {metric} (95% interval)")
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.25)
    axes[0].invert_yaxis()  # the axes share y: once, so the first test is on top
    fig.tight_layout()
    out["differences.png"] = _png(fig)
    plt.close(fig)

    backbones = comparison.curves["backbone"].unique(maintain_order=True).to_list()
    first_seed = comparison.curves["seed"].min()
    fig, axes = plt.subplots(1, len(backbones), figsize=(6 * len(backbones), 4), squeeze=False)
    for ax, backbone in zip(axes[0], backbones, strict=True):
        part = comparison.curves.filter(
            (pl.col("backbone") == backbone) & (pl.col("seed") == first_seed)
        )
        for method in part["method"].unique(maintain_order=True):
            curve = part.filter(pl.col("method") == method)
            style = "-" if comparison.is_neggen(method) else "--"
            ax.plot(curve["epoch"], curve["valid_recall_20"], style, linewidth=1.3, label=method)
        ax.set_title(f"backbone: {backbone}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid Recall@20")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out["curves.png"] = _png(fig)
    plt.close(fig)

    per_attribute = comparison.upstream.get("negatives", {}).get("per_attribute", {})
    names = sorted(per_attribute, key=lambda n: per_attribute[n])
    fig, ax = plt.subplots(figsize=(6, 0.3 * max(len(names), 1) + 1.2))
    ax.barh(names, [per_attribute[n] for n in names], color="#2f6db5")
    ax.set_xlabel("generated negatives")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    out["negatives.png"] = _png(fig)
    plt.close(fig)
    return out


def render(comparison: Comparison) -> dict[str, bytes]:
    """report.md, report.html and the PNG figures, by file name."""
    images = figures(comparison)
    blocks = comparison.blocks()
    title = f"NegGen comparison: {comparison.config.dataset.name}"
    return {
        **images,
        "report.md": markdown(blocks).encode("utf-8"),
        "report.html": html_page(title, blocks, images).encode("utf-8"),
    }
