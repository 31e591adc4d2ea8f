"""The statistics of the sweeps' tables and the study's report, defined once.

Means with Student's t confidence intervals (:func:`mean_std_ci`, :func:`summarize`),
paired comparisons on common seeds (:func:`paired_comparison`), Holm's correction
(:func:`holm`) and Spearman's rank correlation (:func:`spearman`). Pure functions of numbers
(numpy and scipy, nothing of JAX).

A NaN or inf among the values of a test or a summary raises ValueError: a p-value or an
interval computed from them would look like a result (a NaN std once made a difference
"significant, p = 0"). :func:`mean_std_ci` alone passes NaN through (NaN in, NaN out), for
the sweep tables, which show what the runs gave.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def check_finite(values: Sequence[float], what: str = "values") -> np.ndarray:
    """``values`` as a float64 array; ValueError if any is NaN or inf (naming ``what``)."""
    array = np.asarray(values, np.float64)
    if not np.isfinite(array).all():
        bad = ", ".join(str(v) for v in array[~np.isfinite(array)][:3])
        raise ValueError(f"{what} must be finite numbers, got {bad}: no statistic of them is "
                         "meaningful.")
    return array


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
    check_finite(values, "summarize's values")
    mean, std, half_width = mean_std_ci(values, confidence)
    return {"n": len(values), "mean": mean, "std": std,
            "ci_low": mean - half_width, "ci_high": mean + half_width}


def paired_comparison(
    agile_values: Sequence[float], plain_values: Sequence[float],
    confidence: float = CONFIDENCE,
) -> dict[str, float]:
    """Mean of the per-seed differences (agile - plain), its t-interval and two-sided p-value.

    The two sequences are aligned by seed; a negative difference favours the agile variant.
    A NaN or inf in either raises ValueError (no p-value is returned for them).
    """
    agile_values = check_finite(agile_values, "paired_comparison's values")
    plain_values = check_finite(plain_values, "paired_comparison's values")
    if agile_values.shape != plain_values.shape or agile_values.size < 2:
        raise ValueError("paired_comparison needs two equally long sequences of >= 2 values, "
                         f"got {agile_values.size} and {plain_values.size}.")
    with np.errstate(over="ignore"):  # check_finite refuses an overflow
        differences = check_finite(agile_values - plain_values, "paired differences")
    mean = float(differences.mean())
    std = float(differences.std(ddof=1))
    n = differences.size
    half_width = t_half_width(std, n, confidence)
    p_value = float(stats.ttest_rel(agile_values, plain_values).pvalue) if std > 0 else (
        0.0 if mean != 0 else 1.0)
    return {"mean_difference": mean, "ci_low": mean - half_width, "ci_high": mean + half_width,
            "p_value": p_value, "seeds": n}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order), controlling the family-wise error.

    ValueError if a p-value is not a finite number in [0, 1].
    """
    checked = check_finite(p_values, "holm's p-values")
    if ((checked < 0) | (checked > 1)).any():
        raise ValueError(f"holm's p-values must lie in [0, 1], got {list(p_values)}.")
    order = np.argsort(p_values)
    m = len(p_values)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, (m - rank) * p_values[index])
        adjusted[index] = min(running, 1.0)
    return adjusted.tolist()


def spearman(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Spearman's rank correlation of two aligned sequences: (rho, two-sided p-value).

    ValueError for a NaN or inf, or sequences of other lengths.
    """
    x, y = check_finite(x, "spearman's values"), check_finite(y, "spearman's values")
    if x.shape != y.shape:
        raise ValueError(f"spearman needs two equally long sequences, got {x.size} and {y.size}.")
    result = stats.spearmanr(x, y)
    return float(result.statistic), float(result.pvalue)


# ---------------------------------------------------------------------------------------------
# Power of a paired t-test: what a number of seeds can resolve.

POWER = 0.8
MAX_SEEDS = 100_000  # seeds_needed's search bound (an effect too small to resolve in practice)


def paired_power(effect: float, std: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided paired t-test at level ``alpha`` with ``n`` pairs to detect a
    true mean difference ``effect`` when the differences' std is ``std`` (noncentral t)."""
    check_finite([effect, std], "paired_power's effect and std")
    if n < 2 or std <= 0:
        raise ValueError(f"paired_power needs n >= 2 and std > 0, got n={n}, std={std}.")
    df, shift = n - 1, abs(effect) / (std / math.sqrt(n))
    critical = stats.t.ppf(1 - alpha / 2, df)
    power = float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))
    if not math.isfinite(power):  # scipy's nct fails far in the tail: the normal limit
        power = float(stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift))
    return min(power, 1.0)


def min_detectable_effect(std: float, n: int, alpha: float = 0.05, power: float = POWER) -> float:
    """The smallest true mean difference the paired t-test detects with ``power`` (n pairs)."""
    from scipy.optimize import brentq

    check_finite([std], "min_detectable_effect's std")
    if n < 2 or std <= 0:
        raise ValueError(f"min_detectable_effect needs n >= 2 and std > 0, got n={n}, "
                         f"std={std}.")
    upper = std
    while paired_power(upper, std, n, alpha) < power:
        upper *= 2
    return float(brentq(lambda e: paired_power(e, std, n, alpha) - power, 0.0, upper,
                        xtol=1e-12 * std))


def seeds_needed(effect: float, std: float, alpha: float = 0.05, power: float = POWER) -> int:
    """The fewest pairs (seeds) with which the paired t-test detects a true mean difference
    ``effect`` with ``power``; ``MAX_SEEDS`` + 1 if even that many would not."""
    check_finite([effect, std], "seeds_needed's effect and std")
    if effect == 0:
        return MAX_SEEDS + 1
    low, high = 2, 2
    while paired_power(effect, std, high, alpha) < power:
        if high > MAX_SEEDS:
            return MAX_SEEDS + 1
        low, high = high, high * 2
    while low < high:  # the power grows with n: the first n that reaches it
        middle = (low + high) // 2
        if paired_power(effect, std, middle, alpha) >= power:
            high = middle
        else:
            low = middle + 1
    return high


def pair_correlation(first: Sequence[float], second: Sequence[float]) -> float:
    """Pearson's correlation of two aligned sequences (does pairing by seed remove variance?
    The differences' variance is var(first) + var(second) - 2 r sd(first) sd(second))."""
    x, y = check_finite(first, "pair_correlation's values"), check_finite(second, "…")
    if x.shape != y.shape or x.size < 3:
        raise ValueError("pair_correlation needs two equally long sequences of >= 3 values.")
    if x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])
