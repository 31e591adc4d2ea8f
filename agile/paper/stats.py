"""The statistics of the sweeps' tables and the study's report, defined once.

Means with Student's t confidence intervals (:func:`mean_std_ci`, :func:`summarize`),
paired comparisons on common seeds (:func:`paired_comparison`) and Holm's correction
(:func:`holm`). Pure functions of numbers (numpy and scipy, nothing of JAX).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def t_half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the t-interval of a mean of ``n`` values with sample std ``std``."""
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)


def mean_std_ci(values: Sequence[float], confidence: float = CONFIDENCE
                ) -> tuple[float, float, float]:
    """Mean, sample std and the half-width of the t-distribution confidence interval.

    One value has std 0 and an undefined (NaN) interval.
    """
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, 0.0, math.nan
    std = float(values.std(ddof=1))
    return mean, std, t_half_width(std, len(values), confidence)


def summarize(values: Iterable[float], confidence: float = CONFIDENCE) -> dict[str, float] | None:
    """n, mean, sample std and the t-interval of ``values``; None when there are none."""
    values = list(values)
    if not values:
        return None
    mean, std, half_width = mean_std_ci(values, confidence)
    return {"n": len(values), "mean": mean, "std": std,
            "ci_low": mean - half_width, "ci_high": mean + half_width}


def paired_comparison(
    agile_values: Sequence[float], plain_values: Sequence[float],
    confidence: float = CONFIDENCE,
) -> dict[str, float]:
    """Mean of the per-seed differences (agile - plain), its t-interval and two-sided p-value.

    The two sequences are aligned by seed; a negative difference favours the agile variant.
    """
    agile_values = np.asarray(agile_values, np.float64)
    plain_values = np.asarray(plain_values, np.float64)
    if agile_values.shape != plain_values.shape or agile_values.size < 2:
        raise ValueError("paired_comparison needs two equally long sequences of >= 2 values, "
                         f"got {agile_values.size} and {plain_values.size}.")
    differences = agile_values - plain_values
    mean = float(differences.mean())
    std = float(differences.std(ddof=1))
    n = differences.size
    half_width = t_half_width(std, n, confidence)
    p_value = float(stats.ttest_rel(agile_values, plain_values).pvalue) if std > 0 else (
        0.0 if mean != 0 else 1.0)
    return {"mean_difference": mean, "ci_low": mean - half_width, "ci_high": mean + half_width,
            "p_value": p_value, "seeds": n}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order), controlling the family-wise error."""
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p_values[index])
        adjusted[index] = min(running, 1.0)
    return adjusted.tolist()
