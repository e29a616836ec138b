"""The paired significance test of two methods over the same test users, and Holm's correction
for a family of such tests."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    """Method A against method B on the same users: mean of A - B, and how sure. `p_holm` is
    the p-value adjusted over the family of tests it was reported with (Holm)."""

    method: str
    baseline: str
    metric: str
    users: int
    mean_a: float
    mean_b: float
    difference: float
    relative: float
    ci_low: float
    ci_high: float
    t: float
    p_value: float
    resamples: int
    p_holm: float | None = None
    role: str = ""  # what the baseline is to the method: best baseline, a control

    def as_dict(self) -> dict[str, float | int | str | None]:
        return asdict(self)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment: the family-wise error rate is held at the level a test's
    adjusted p-value is compared with, whatever the dependence between the tests."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_test(
    a: np.ndarray,
    b: np.ndarray,
    *,
    method: str,
    baseline: str,
    metric: str,
    resamples: int,
    seed: int = 0,
) -> PairedTest:
    """Two-sided paired randomisation (sign-flip) test of mean(a - b) = 0, per user.

    Under the null the sign of each user's difference is exchangeable; the p-value is the share
    of `resamples` random sign flips whose |mean| reaches the observed one (with the observed
    counted, so it is never 0). The 95% interval is the normal one of the mean difference."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"paired test needs two equal non-empty vectors, got {a.shape}, {b.shape}")
    diff = a - b
    observed = abs(diff.mean())
    rng = np.random.default_rng(seed)
    reached = 0
    chunk = max(1, 4_000_000 // len(diff))
    for start in range(0, resamples, chunk):
        n = min(chunk, resamples - start)
        signs = rng.integers(0, 2, size=(n, len(diff)), dtype=np.int8) * 2 - 1
        means = np.abs(signs.astype(np.float64) @ diff) / len(diff)
        reached += int((means >= observed - 1e-15).sum())
    sd = diff.std(ddof=1) if len(diff) > 1 else 0.0
    se = sd / math.sqrt(len(diff)) if sd > 0 else 0.0
    mean_b = float(b.mean())
    return PairedTest(
        method=method,
        baseline=baseline,
        metric=metric,
        users=len(diff),
        mean_a=float(a.mean()),
        mean_b=mean_b,
        difference=float(diff.mean()),
        relative=float(diff.mean() / mean_b) if mean_b else math.nan,
        ci_low=float(diff.mean() - 1.96 * se),
        ci_high=float(diff.mean() + 1.96 * se),
        t=float(diff.mean() / se) if se else 0.0,
        p_value=(reached + 1) / (resamples + 1),
        resamples=resamples,
    )
