"""Helpers of the study's tests: interrupting a run and comparing summaries."""

from __future__ import annotations

from agile.paper.summary import TIMING_FIELDS


def strip_times(summary: dict) -> dict:
    """The summary without its timing fields (which differ from run to run), per seed too."""
    summary = {k: v for k, v in summary.items() if k not in TIMING_FIELDS}
    if "seeds" in summary:
        summary["seeds"] = [strip_times(seed) for seed in summary["seeds"]]
    return summary


class Interrupt(Exception):
    """Stands in for Ctrl-C in the interrupted-resume tests."""


def interrupt_after(step: int):
    """An ``after_step`` hook that raises :class:`Interrupt` after ``step``."""
    def after_step(current: int) -> None:
        if current == step:
            raise Interrupt(f"after step {current}")

    return after_step
