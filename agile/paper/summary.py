"""A run's ``summary.json``: per-seed results from the evaluation history, mean and std over seeds.

Pure functions of a :class:`~agile.paper.history.History`, the best model's test metrics and the
run's timing (measured by :class:`Clock`, whose fields are :data:`TIMING_FIELDS`), so they are
tested without training.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from agile.paper.history import History

SEED_STATISTIC_FIELDS = (
    "best_test_loss",
    "best_test_accuracy",
    "min_test_loss",
    "final_test_loss",
    "final_test_accuracy",
    "best_step",
    "steps",
)
TIMING_FIELDS = WALL_TIME, STEPS_PER_SECOND, BREAKDOWN = (
    "wall_time_s", "steps_per_second", "time_breakdown_s")


class Clock:
    """Wall time of a session, split into named phases."""

    def __init__(self):
        self.start = time.perf_counter()
        self.phases: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] += time.perf_counter() - start

    def timing(self, previous: dict[str, Any], steps: int) -> dict[str, Any]:
        """``previous`` (earlier sessions' timing) plus this session's, if it trained."""
        if steps == 0:
            return previous
        wall = previous.get(WALL_TIME, 0.0) + time.perf_counter() - self.start
        breakdown = dict(previous.get(BREAKDOWN, {}))
        for name, seconds in self.phases.items():
            breakdown[name] = breakdown.get(name, 0.0) + seconds
        loop = breakdown.get("steps", 0.0) + breakdown.get("evaluation", 0.0) + breakdown.get(
            "checkpoint", 0.0) + breakdown.get("logging", 0.0)
        steps_timed = previous.get("steps_timed", 0) + steps
        return {WALL_TIME: wall, STEPS_PER_SECOND: steps_timed / loop if loop else None,
                BREAKDOWN: breakdown, "steps_timed": steps_timed}


def seed_summary(
    history: History,
    *,
    seed: int,
    steps: int,
    best_test: dict[str, float] | None,
    agile_ranges: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """One seed's results.

    ``best_test`` is the test loss and accuracy of the model at the best row (the
    loop evaluates it whenever that row has none); ``min_test_loss`` and the final
    values come from the rows that have a test evaluation.
    """
    best = history.best()
    tested = [row for row in history.rows if "test_loss" in row]
    final = history.rows[-1] if history.rows else {}
    return {
        "seed": seed,
        "steps": steps,
        "evaluations": len(history.rows),
        "early_stopped": history.should_stop(),
        "selected_on": history.select_on,
        "best_step": best["step"] if best else None,
        "best_test_loss": best_test["loss"] if best_test else None,
        "best_test_accuracy": best_test["accuracy"] if best_test else None,
        "min_test_loss": min(row["test_loss"] for row in tested) if tested else None,
        "final_test_loss": final.get("test_loss"),
        "final_test_accuracy": final.get("test_accuracy"),
        "agile_ranges": agile_ranges,
    }


def seed_statistics(per_seed: Sequence[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """``{"mean": ..., "std": ...}`` over seeds of each numeric summary field.

    The std is the sample std (ddof=1; 0 for one seed); a field missing for
    any seed gives None.
    """
    stats: dict[str, dict[str, float | None]] = {"mean": {}, "std": {}}
    for field in SEED_STATISTIC_FIELDS:
        values = [summary.get(field) for summary in per_seed]
        if any(value is None for value in values):
            stats["mean"][field] = stats["std"][field] = None
            continue
        stats["mean"][field] = float(np.mean(values))
        stats["std"][field] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return stats


def run_summary(
    run_fields: dict[str, Any],
    per_seed: Sequence[dict[str, Any]],
    timing: dict[str, Any],
    batched_seeds: bool,
) -> dict[str, Any]:
    """The whole ``summary.json``.

    ``run_fields`` (combo, activations) head every seed's entry. One seed gives its
    results at the top level; several give ``"seeds"`` with their ``"mean"`` and
    ``"std"``. ``timing`` (``wall_time_s``, ``steps_per_second``, ``time_breakdown_s``)
    is the run's, added up over every session that trained it.
    """
    seeds = [{**run_fields, **seed, **timing} for seed in per_seed]
    if not batched_seeds:
        return seeds[0]
    return {
        **run_fields,
        "num_seeds": len(per_seed),
        "seeds": seeds,
        **seed_statistics(per_seed),
        **timing,
    }
