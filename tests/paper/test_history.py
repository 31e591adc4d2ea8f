"""agile.paper.history: best row, patience and early stop, truncation on resume, JSON round trip."""

import json

import pytest

from agile.paper.history import History


def _history(val_losses, patience=2, select_on="val_loss"):
    history = History(select_on, patience)
    for i, loss in enumerate(val_losses, start=1):
        history.record({"step": 10 * i, select_on: loss})
    return history


def test_record_says_whether_the_row_is_the_new_best():
    history = History("val_loss", patience=3)
    assert [history.record({"step": s, "val_loss": v})
            for s, v in ((1, 0.5), (2, 0.6), (3, 0.4), (4, 0.4))] == [True, False, True, False]
    assert history.best() == {"step": 3, "val_loss": 0.4}  # the earliest of equal losses


def test_empty_history_has_no_best_and_never_stops():
    history = History("val_loss", patience=1)
    assert history.best() is None
    assert history.evaluations_without_improvement() == 0 and not history.should_stop()


def test_early_stop_after_patience_evaluations_without_improvement():
    assert not _history([0.5, 0.4, 0.45]).should_stop()  # one evaluation without improvement
    stopped = _history([0.5, 0.4, 0.45, 0.41])
    assert stopped.evaluations_without_improvement() == 2 and stopped.should_stop()
    assert not _history([0.5, 0.4, 0.45, 0.41], patience=0).should_stop()  # 0 disables


def test_selection_on_test_loss_never_stops_early():
    history = _history([0.5, 0.6, 0.7, 0.8], patience=1, select_on="test_loss")
    assert history.best()["step"] == 10 and not history.should_stop()


def test_truncated_keeps_rows_up_to_a_step_and_leaves_the_original():
    history = _history([0.5, 0.4, 0.45, 0.41])
    truncated = history.truncated(20)
    assert [row["step"] for row in truncated.rows] == [10, 20]
    assert not truncated.should_stop() and history.should_stop()
    assert len(history.rows) == 4


def test_json_round_trip():
    history = _history([0.5, 0.4, 0.45])
    restored = History.from_json(json.loads(json.dumps(history.to_json())))
    assert restored == history


def test_rows_must_advance_and_selection_key_is_checked():
    history = _history([0.5])
    with pytest.raises(ValueError, match="rows must advance: step 10 after 10"):
        history.record({"step": 10, "val_loss": 0.1})
    with pytest.raises(ValueError, match="select_on must be one of val_loss, test_loss"):
        History("train_loss")
