"""The report's figures as PNG: the paired differences, the training curves, the generated
negatives per attribute."""

from __future__ import annotations

import io
from typing import Any

import polars as pl

from neggen_core.compare.report.comparison import Comparison
from neggen_core.compare.report.verdict import significant


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def figures(comparison: Comparison) -> dict[str, bytes]:
    """`differences.png`, `curves.png` and `negatives.png`, by file name."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    out: dict[str, bytes] = {}
    tests = comparison.tests
    metrics = list(dict.fromkeys(t.metric for t in tests)) or ["recall@20"]
    fig, grid = plt.subplots(
        1, len(metrics), figsize=(6.5 * len(metrics), 0.5 * max(len(tests), 2) + 1.4), sharey=True
    )
    axes = [grid] if len(metrics) == 1 else list(grid)
    for ax, metric in zip(axes, metrics, strict=True):
        part = [t for t in tests if t.metric == metric]
        labels = [f"{t.method} vs {t.baseline}" for t in part]
        y = list(range(len(part)))
        for row, t in zip(y, part, strict=True):
            colour = "#2f6db5" if significant(t) else "#8a94a3"
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

    curves = comparison.curves
    backbones = curves["backbone"].unique(maintain_order=True).to_list()
    first_seed = curves["seed"].min()
    fig, rows = plt.subplots(1, len(backbones), figsize=(6 * len(backbones), 4), squeeze=False)
    for ax, backbone in zip(rows[0], backbones, strict=True):
        shown = curves.filter((pl.col("backbone") == backbone) & (pl.col("seed") == first_seed))
        for method in shown["method"].unique(maintain_order=True):
            curve = shown.filter(pl.col("method") == method)
            style = "-" if comparison.method_ids[method].neggen else "--"
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
