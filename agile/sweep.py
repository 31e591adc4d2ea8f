"""Tables for a sweep over Table 1's combinations with several seeds each.

``csv_rows`` turns one combination's ``summary.json`` into one row per seed;
``results_markdown`` condenses those rows into mean ± std and a 95% confidence
interval (Student's t) per combination, beside the paper's reported loss.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from agile.combos import COMBOS, PAPER_TABLE1

CSV_FIELDS = (
    "combo", "conv_activation", "dense_activation", "seed", "steps", "best_step",
    "best_test_loss", "final_test_loss", "best_test_accuracy", "final_test_accuracy",
    "a_min", "a_max", "b_min", "b_max", "wall_time_s",
)
TABLE_FIELDS = (
    ("best_test_loss", "best test loss"),
    ("final_test_loss", "final test loss"),
    ("final_test_accuracy", "final test accuracy"),
    ("best_step", "best step"),
)


def seed_summaries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each seed's results from a ``summary.json`` (one seed, or several under ``"seeds"``)."""
    return summary["seeds"] if "seeds" in summary else [summary]


def _agile_range(ranges: dict[str, dict[str, float]], name: str) -> tuple[float | None, ...]:
    """Smallest min and largest max of parameter ``name`` ("a" or "b") over agile layers."""
    layers = [r for key, r in ranges.items() if key.endswith(f"/{name}")]
    if not layers:
        return None, None
    return min(r["min"] for r in layers), max(r["max"] for r in layers)


def csv_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``CSV_FIELDS`` row per seed of a combination's summary; a/b ranges span its layers."""
    rows = []
    for result in seed_summaries(summary):
        row = {field: result.get(field) for field in CSV_FIELDS}
        row["a_min"], row["a_max"] = _agile_range(result["agile_ranges"], "a")
        row["b_min"], row["b_max"] = _agile_range(result["agile_ranges"], "b")
        rows.append(row)
    return rows


def write_csv(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` as CSV text with a ``CSV_FIELDS`` header (None as an empty cell)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def mean_std_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean, sample std and the half-width of the t-distribution confidence interval.

    One value has std 0 and an undefined (NaN) interval.
    """
    values = np.asarray(values, np.float64)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, 0.0, math.nan
    std = float(values.std(ddof=1))
    half_width = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1)) * std / math.sqrt(
        len(values)
    )
    return mean, std, half_width


def _cell(values: Sequence[float], digits: int) -> str:
    mean, std, half_width = mean_std_ci(values)
    if math.isnan(half_width):
        return f"{mean:.{digits}f}"
    return (f"{mean:.{digits}f} ± {std:.{digits}f} "
            f"[{mean - half_width:.{digits}f}, {mean + half_width:.{digits}f}]")


def results_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table per combination: mean ± std [95% CI] of each ``TABLE_FIELDS`` entry."""
    combos = sorted({row["combo"] for row in rows})
    header = ["combo", "conv / dense", "seeds", *(label for _, label in TABLE_FIELDS),
              "paper test loss"]
    lines = [
        "Mean ± sample std [95% confidence interval, Student's t] over seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for combo in combos:
        combo_rows = [row for row in rows if row["combo"] == combo]
        conv, dense = COMBOS.get(combo, (combo_rows[0]["conv_activation"],
                                         combo_rows[0]["dense_activation"]))
        cells = [str(combo), f"{conv} / {dense}", str(len(combo_rows))]
        for field, _ in TABLE_FIELDS:
            values = [row[field] for row in combo_rows if row[field] is not None]
            digits = 0 if field == "best_step" else 4
            cells.append(_cell(values, digits) if values else "-")
        paper = PAPER_TABLE1.get(combo)
        cells.append(f"{paper[0]:.5f}" if paper else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
