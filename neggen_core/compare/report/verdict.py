"""The verdict: for every NegGen method, is it significantly above the best baseline of its
backbone and above its controls, after Holm's correction."""

from __future__ import annotations

from typing import Any

from neggen_core.compare.report.comparison import Comparison
from neggen_core.compare.stats import PairedTest
from neggen_core.models.registry import MethodId

SIGNIFICANCE = 0.05
ROLES = ("best baseline", "real_only", "random_intervention")


def significant(test: PairedTest) -> bool:
    """Whether the Holm-adjusted p-value is below the significance level."""
    return test.p_holm is not None and test.p_holm < SIGNIFICANCE


def verdict(comparison: Comparison) -> dict[str, Any]:
    """For every NegGen method: is it significantly above the best baseline of its backbone
    (chosen on valid), and above its controls, after Holm's correction over every test; the
    first line answers that for NegGen on LightGCN (or the first NegGen)."""
    ids = comparison.method_ids
    methods = list(dict.fromkeys(t.method for t in comparison.tests))
    if not methods:
        return {
            "lines": ["No NegGen method with a baseline or a control to test it against."],
            "neggen": None,
        }
    main = next((m for m in methods if ids[m].neggen and ids[m].backbone == "lightgcn"), methods[0])
    lines: list[str] = []
    result: dict[str, Any] = {"neggen": main, "comparisons": []}
    for method in [main, *(m for m in methods if m != main)]:
        for role in ROLES:
            tests = [t for t in comparison.tests if t.method == method and t.role == role]
            if not tests:
                continue
            line, above = _verdict_line(ids[method], role, tests)
            result["comparisons"].append(
                {"method": method, "against": tests[0].baseline, "role": role, "above": above}
            )
            if method == main and role == "best baseline":
                result["beats_best_baseline"] = above
                line = f"**{line}**"
            lines.append(line)
    r20 = comparison.value(main, "test", "recall", 20)
    n20 = comparison.value(main, "test", "ndcg", 20)
    result.update({"recall@20": r20[0], "ndcg@20": n20[0]})
    lines.append(
        f"{main}: test Recall@20 {r20[0]:.4f} ± {r20[1]:.4f}, NDCG@20 {n20[0]:.4f} ± "
        f"{n20[1]:.4f} (mean ± std over seeds; per seed below)."
    )
    reference = MethodId("lightgcn", "rns").label
    if reference in comparison.methods():
        base = comparison.value(reference, "test", "recall", 20)[0]
        result["over_lightgcn_rns"] = r20[0] / base - 1 if base else float("nan")
        lines.append(
            f"Against {reference} ({base:.4f}): {result['over_lightgcn_rns']:+.1%} "
            "Recall@20 (means, not tested)."
        )
    peers = []
    for peer in comparison.config.compare.peers:
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
    ablations = [m for m in comparison.methods() if _ablation_of(ids[m], ids[main])]
    if ablations:
        lines.append(
            "Ablations, test Recall@20: "
            + "; ".join(
                f"{m}: {comparison.value(m, 'test', 'recall', 20)[0]:.4f}" for m in ablations
            )
            + f" (full model {r20[0]:.4f})."
        )
    result["lines"] = lines
    return result


def _ablation_of(method: MethodId, full: MethodId) -> bool:
    """Whether `method` is an ablation of NegGen on the full model's backbone."""
    return method.neggen and method.backbone == full.backbone and method.ablation != "none"


def _verdict_line(method: MethodId, role: str, tests: list[PairedTest]) -> tuple[str, bool]:
    """One comparison of the verdict, and whether the method is significantly above on every
    tested metric."""
    above = all(t.difference > 0 and significant(t) for t in tests)
    below = any(t.difference < 0 and significant(t) for t in tests)
    word = (
        "significantly above"
        if above
        else "significantly below"
        if below
        else "not significantly different from"
    )
    baseline = tests[0].baseline
    what = (
        f"the best {method.backbone} baseline, {baseline} (the best valid Recall@20)"
        if role == "best baseline"
        else f"its {role} control, {baseline}"
    )
    figures = "; ".join(
        f"{t.metric} {t.mean_a:.4f} vs {t.mean_b:.4f}, {t.difference:+.4f} ({t.relative:+.1%}), "
        f"95% interval [{t.ci_low:+.4f}, {t.ci_high:+.4f}], p = {t.p_value:.4f}, "
        f"Holm-adjusted p = {t.p_holm:.4f}"
        for t in tests
    )
    return f"{method.label} is {word} {what} at 5% after Holm: {figures}.", above


def _above(ours: float, theirs: float) -> str:
    return "above" if ours > theirs else "below" if ours < theirs else "equal"
