"""The report as one document of blocks (headings, paragraphs, lists, tables, figures), built
once from the comparison; the renderers only lay the blocks out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl

from neggen_core.compare.plan import describe
from neggen_core.compare.report.comparison import Comparison
from neggen_core.compare.report.verdict import SIGNIFICANCE, significant, verdict

METRIC_COLUMNS = (
    ("recall", 10),
    ("recall", 20),
    ("recall", 50),
    ("ndcg", 10),
    ("ndcg", 20),
    ("ndcg", 50),
)


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


def blocks(comparison: Comparison) -> list[Block]:
    """The whole report, section by section."""
    config = comparison.config
    seeds = max(comparison.summary["seeds"].to_list(), default=0)
    found = verdict(comparison)
    document: list[Block] = [
        Heading(1, f"NegGen comparison: {config.dataset.name}"),
        Paragraph(
            f"{len(comparison.methods())} methods x {seeds} seeds on one split and one evaluator "
            "(full ranking, train items masked). Every method is tuned with the same budget "
            f"({config.compare.budget} search points) and chosen on valid Recall@20 only; "
            "test figures are the mean ± standard deviation over seeds, and every claim "
            "below rests on a paired test over the test users with Holm's correction. Data: "
            + ", ".join(f"{k} {v}" for k, v in comparison.versions.items())
            + "."
        ),
        Heading(2, "Verdict"),
        Bullets(tuple(found["lines"])),
    ]
    if comparison.tests:
        document += [
            Heading(2, "Significance"),
            Paragraph(
                "Paired randomisation (sign-flip) tests over the test users, per-user "
                "metrics averaged over the seeds; Holm's correction over all "
                f"{len(comparison.tests)} tests; significant: adjusted p < {SIGNIFICANCE:.0%}."
            ),
            _tests_table(comparison),
            Figure(
                "differences.png",
                "Paired differences (method - baseline or control) with 95% intervals, "
                "per test; Holm-adjusted p beside each.",
            ),
        ]
    document += [
        Heading(2, f"Test results (mean ± std over {seeds} seeds)"),
        _results_table(comparison),
    ]
    if config.compare.peers:
        document += [
            Paragraph("Measured elsewhere (not by this pipeline), on the same split:"),
            Table(
                ("Model", "Recall@20", "NDCG@20", "Source"),
                tuple(
                    (p.name, f"{p.recall_20:.4f}", f"{p.ndcg_20:.4f}", p.source)
                    for p in config.compare.peers
                ),
            ),
        ]
    document += [
        Heading(2, "Per seed (test)"),
        _seeds_table(comparison),
        Heading(2, "Training curves"),
        Figure(
            "curves.png",
            "Valid Recall@20 per epoch (first seed); the stopping rule watches this curve.",
        ),
        Heading(2, "Hyper-parameters (same budget, chosen on valid only)"),
        *_grid_blocks(comparison),
        Heading(2, "Generated negatives"),
        *_negatives_blocks(comparison),
        Heading(2, "Dataset"),
        _dataset_table(comparison),
        Heading(2, "Software"),
        _software_table(comparison),
    ]
    return document


def _seeds_table(comparison: Comparison) -> Table:
    methods = comparison.methods()
    seeds = sorted({seed for m in methods for seed, _ in comparison.per_seed(m, "recall", 20)})
    rows = []
    for method in methods:
        cells = [method]
        for metric in ("recall", "ndcg"):
            values = dict(comparison.per_seed(method, metric, 20))
            cells += [f"{values[s]:.4f}" if s in values else "" for s in seeds]
        rows.append(tuple(cells))
    header = (
        "Method",
        *(f"R@20 seed {s}" for s in seeds),
        *(f"N@20 seed {s}" for s in seeds),
    )
    return Table(header, tuple(rows))


def _software_table(comparison: Comparison) -> Table:
    software = comparison.software
    commit = software.get("commit") or "not a git checkout"
    if software.get("dirty"):
        commit += " (with uncommitted changes)"
    rows = [("neggen", str(software.get("neggen"))), ("commit", commit)]
    rows.append(("python", str(software.get("python"))))
    rows += [(name, str(v)) for name, v in software.get("libraries", {}).items()]
    return Table(("", "Version"), tuple(rows))


def _results_table(comparison: Comparison) -> Table:
    methods = comparison.methods()
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
        means = [comparison.value(m, "test", metric, k)[0] for m in methods]
        best |= {(r, c) for r, v in enumerate(means) if v == max(means)}
    valid = [comparison.value(m, "valid", "recall", 20)[0] for m in methods]
    best |= {(r, len(METRIC_COLUMNS) + 1) for r, v in enumerate(valid) if v == max(valid)}
    for method in methods:
        cells = [method]
        for metric, k in METRIC_COLUMNS:
            mean, std = comparison.value(method, "test", metric, k)
            cells.append(f"{mean:.4f} ± {std:.4f}")
        first = comparison.summary.filter(pl.col("method") == method).row(0, named=True)
        cells += [
            f"{comparison.value(method, 'valid', 'recall', 20)[0]:.4f}",
            f"{first['best_epoch']:.0f}",
            f"{first['train_seconds']:.0f}",
        ]
        rows.append(tuple(cells))
    return Table(header, tuple(rows), frozenset(best))


def _tests_table(comparison: Comparison) -> Table:
    rows, bold = [], set()
    for r, t in enumerate(comparison.tests):
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
                "yes" if significant(t) else "no",
            )
        )
        if significant(t):
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


def _grid_blocks(comparison: Comparison) -> list[Block]:
    grid = comparison.config.compare.grid
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
            for row in comparison.search
        ),
    )
    rows, bold = [], set()
    for r, row in enumerate(comparison.grid.iter_rows(named=True)):
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
            f"Budget: {comparison.config.compare.budget} points per method, the same for every "
            "method (its whole grid where that has fewer; a seeded random sample where it "
            f"has more). Grids: {text or 'none'}. Every point is trained with the first "
            "seed; the best valid Recall@20 is kept. NegGen's ablations and controls are "
            "searched as NegGen is, each on its own; NegGen and its ablations take the real "
            "negatives (rns, dns or ahns) of the baseline of their backbone with the best "
            "valid Recall@20, with that baseline's chosen values."
            + (
                " Backbones not in compare.grid_backbones take the values chosen on "
                f"{comparison.config.compare.grid_backbones[0]}."
                if comparison.config.compare.grid_backbones
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


def _negatives_blocks(comparison: Comparison) -> list[Block]:
    report = comparison.upstream.get("negatives", {})
    embeddings = comparison.upstream.get("embeddings", {})
    statuses = report.get("statuses", {})
    invalid = report.get("invalid_reasons", {})
    summary = [
        f"{report.get('negatives', 0):,} generated for {report.get('items', 0):,} items: "
        + ", ".join(f"{n:,} {s}" for s, n in sorted(statuses.items())),
        "per modality: "
        + ", ".join(f"{m} {n:,}" for m, n in sorted(report.get("per_modality", {}).items())),
        f"possible false negatives (exact match or cosine ≥ "
        f"{comparison.config.embeddings.near_duplicate_threshold} to another real item): "
        f"{embeddings.get('possible_false_negatives', 0):,}"
        + (
            "; left out of training"
            if comparison.config.train.neggen.skip_possible_false_negatives
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
    summary += _quality(report, comparison.config.negatives.max_cosine)
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
        _examples_table(comparison),
    ]


def _quality(report: dict[str, Any], max_cosine: float | None) -> list[str]:
    """What the key negatives change and into what: the share of each intervened attribute,
    the most frequent replacement values, and how close the kept ones are to their positives."""
    lines = []
    keys = report.get("intervened_keys", {})
    if keys:
        lines.append(
            "changed key (share of the valid negatives, mean lift in the positives' categories): "
            + ", ".join(
                f"{a} {k['share']:.0%} (lift {k['mean_lift']})" for a, k in list(keys.items())[:6]
            )
        )
    top = report.get("top_replacement_values", [])
    if top:
        lines.append(
            "most frequent replacement values: "
            + ", ".join(f"{t['name']} → {t['value']} ({t['share']:.1%})" for t in top[:5])
        )
    cosine = report.get("cosine_to_positive", {})
    if cosine.get("measured"):
        rejected = sum(cosine["rejected_near_copies"].values())
        lines.append(
            f"near-copies (cosine ≥ {max_cosine} to the positive) rejected: {rejected:,}; "
            f"kept: median cosine {cosine['valid_median']}, "
            f"{cosine['valid_share_at_or_above_0.99']:.1%} at 0.99 or above; "
            + ", ".join(f"{b}: {n:,}" for b, n in cosine["valid"].items() if n)
        )
    return lines


def _examples_table(comparison: Comparison) -> Table:
    """One valid negative per intervened attribute (the first by id), with its positive's
    content in the intervened modality."""
    valid = comparison.negatives.filter(pl.col("status") == "valid").with_columns(
        pl.col("interventions").list.first().struct.field("name").alias("attribute")
    )
    picked = (
        valid.sort("negative_id")
        .group_by("attribute", maintain_order=True)
        .first()
        .head(comparison.config.compare.examples)
        .join(
            comparison.items.rename({"text": "item_text", "visual": "item_visual"}), on="item_idx"
        )
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


def _dataset_table(comparison: Comparison) -> Table:
    ingest = comparison.upstream.get("ingest", {})
    embeddings = comparison.upstream.get("embeddings", {})
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


def _clip(text: str, limit: int = 220) -> str:
    flat = " · ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
