"""agile.paper.summary: one seed's results from its history, statistics over seeds, the file."""

import numpy as np
import pytest

from agile.paper.history import History
from agile.paper.summary import run_summary, seed_statistics, seed_summary

RANGES = {"hidden_act/a": {"min": 0.5, "max": 1.5, "mean": 1.0}}


def _history():
    history = History("val_loss", patience=2)
    for step, val, test in ((50, 0.5, 0.52), (100, 0.4, None), (150, 0.45, None),
                            (200, 0.46, 0.47)):
        row = {"step": step, "val_loss": val}
        if test is not None:
            row.update(test_loss=test, test_accuracy=0.9)
        history.record(row)
    return history


def test_seed_summary_takes_best_step_from_history_and_best_test_from_its_evaluation():
    summary = seed_summary(_history(), seed=3, steps=200,
                           best_test={"loss": 0.41, "accuracy": 0.95}, agile_ranges=RANGES)
    assert summary["seed"] == 3 and summary["steps"] == 200 and summary["evaluations"] == 4
    assert summary["best_step"] == 100 and summary["selected_on"] == "val_loss"
    assert (summary["best_test_loss"], summary["best_test_accuracy"]) == (0.41, 0.95)
    assert summary["min_test_loss"] == 0.47  # over the rows that have a test evaluation
    assert summary["final_test_loss"] == 0.47 and summary["early_stopped"]
    assert summary["agile_ranges"] == RANGES


def test_seed_summary_of_an_empty_history_is_all_none():
    summary = seed_summary(History("val_loss"), seed=0, steps=0, best_test=None,
                           agile_ranges={})
    assert summary["best_step"] is None and summary["best_test_loss"] is None
    assert summary["min_test_loss"] is None and summary["final_test_loss"] is None


def test_seed_statistics():
    stats = seed_statistics(
        [{"final_test_loss": 1.0, "best_step": 10}, {"final_test_loss": 3.0, "best_step": None}]
    )
    assert stats["mean"]["final_test_loss"] == 2.0
    assert stats["std"]["final_test_loss"] == pytest.approx(np.sqrt(2.0))
    assert stats["mean"]["best_step"] is None and stats["std"]["best_step"] is None
    one = seed_statistics([{"final_test_loss": 1.0}])
    assert one["std"]["final_test_loss"] == 0.0


def test_run_summary_for_one_seed_and_for_a_seed_batch():
    fields = {"combo": 12, "conv_activation": "agile_relu", "dense_activation": "agile_sigmoid"}
    timing = {"wall_time_s": 5.0, "steps_per_second": 100.0}
    seeds = [seed_summary(_history(), seed=s, steps=200, best_test={"loss": 0.4 + s,
                                                                     "accuracy": 0.9},
                          agile_ranges={}) for s in (0, 1)]
    one = run_summary(fields, seeds[:1], timing, batched_seeds=False)
    assert one["combo"] == 12 and one["seed"] == 0 and one["wall_time_s"] == 5.0
    batch = run_summary(fields, seeds, timing, batched_seeds=True)
    assert batch["num_seeds"] == 2 and [s["seed"] for s in batch["seeds"]] == [0, 1]
    assert batch["seeds"][1]["combo"] == 12
    assert batch["mean"]["best_test_loss"] == pytest.approx(0.9)
    assert batch["steps_per_second"] == 100.0
