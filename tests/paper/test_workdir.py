"""agile.paper.workdir: lock, config guard, rows file, checkpoints with fallback, TB events."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from agile_testing import REPO_ROOT  # noqa: E402

from agile.paper import workdir as workdir_lib
from agile.paper.workdir import WorkdirError

HOLD_LOCK = textwrap.dedent(
    """
    import signal, sys
    from pathlib import Path
    from agile.paper.workdir import Lock
    with Lock(Path(sys.argv[1])):
        print("locked", flush=True)
        signal.pause()  # holds the lock until the test kills it (no clock involved)
    """
)


def _hold_lock(workdir: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_second_run_on_a_locked_workdir_fails_naming_the_holder(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        with pytest.raises(WorkdirError, match=rf"in use by process {holder.pid} on "):
            with workdir_lib.Lock(tmp_path):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_lock_left_by_a_killed_run_does_not_block(tmp_path):
    holder = _hold_lock(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert (tmp_path / ".lock").exists()
    with workdir_lib.Lock(tmp_path):
        assert f"process {os.getpid()}" in (tmp_path / ".lock").read_text()
    with workdir_lib.Lock(tmp_path):  # released on exit, so it can be taken again
        pass


def test_prepare_creates_the_folder_or_says_why_not(tmp_path):
    assert workdir_lib.prepare(tmp_path / "a" / "b").is_dir()
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkdirError, match=r"exists and is not a folder"):
        workdir_lib.prepare(tmp_path / "file")
    with pytest.raises(WorkdirError, match=r"Cannot create workdir .*file/run"):
        workdir_lib.prepare(tmp_path / "file" / "run")


def test_config_guard(tmp_path):
    config = {"learning_rate": 0.001, "allow_config_change": False, "model": {"pooling": "max"}}
    workdir_lib.check_config(tmp_path, config, allow_change=False)  # nothing saved yet
    assert not (tmp_path / "config.json").exists()  # checking writes nothing
    workdir_lib.save_config(tmp_path, config)
    workdir_lib.check_config(tmp_path, {**config, "allow_config_change": True}, False)
    changed = {**config, "learning_rate": 0.1, "model": {"pooling": "avg"}}
    with pytest.raises(WorkdirError,
                       match=r"different config \(fields: learning_rate, model.pooling\)"):
        workdir_lib.check_config(tmp_path, changed, allow_change=False)
    workdir_lib.check_config(tmp_path, changed, allow_change=True)  # no checkpoint: starts anew
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(WorkdirError, match=r"config.json is not valid JSON"):
        workdir_lib.check_config(tmp_path, config, allow_change=False)


def test_allowed_changes_are_the_resumable_fields_once_checkpoints_exist(tmp_path):
    """With checkpoints, allow_config_change lets only the resumable fields differ; another
    field is refused by name (a resume cannot apply it). A field the saved config lacks is no
    difference when the new config holds its default (code that added it reproduces the run)."""
    saved = {"learning_rate": 0.001, "model": {"pooling": "max"}}
    workdir_lib.save_config(tmp_path, saved)
    (tmp_path / "checkpoints" / "10").mkdir(parents=True)
    resumable = ("learning_rate",)
    workdir_lib.check_config(tmp_path, {**saved, "learning_rate": 0.1}, True, resumable)
    with pytest.raises(WorkdirError, match=r"holds checkpoints of a run with other model.pooling: "
                                           r"a resume cannot change that .*even with "
                                           r"allow_config_change. Use a new --workdir."):
        workdir_lib.check_config(tmp_path, {**saved, "model": {"pooling": "avg"}}, True,
                                 resumable)
    added = {**saved, "model": {"pooling": "max", "new_field": 3}}
    workdir_lib.check_config(tmp_path, added, False, defaults={"model": {"new_field": 3}})
    with pytest.raises(WorkdirError, match=r"different config \(fields: model.new_field\)"):
        workdir_lib.check_config(tmp_path, added, False, defaults={"model": {"new_field": 4}})
    assert workdir_lib.config_differences({"a": {"b": 1}}, {"a": {"b": 2}, "c": 0}) == [
        "a.b", "c"]


def test_checkpoints_without_a_config_are_refused_unless_allowed(tmp_path):
    (tmp_path / "checkpoints" / "100").mkdir(parents=True)
    with pytest.raises(WorkdirError, match=r"holds checkpoints but no config.json"):
        workdir_lib.check_config(tmp_path, {"seed": 0}, allow_change=False)
    workdir_lib.check_config(tmp_path, {"seed": 0}, allow_change=True)


def test_write_rows_says_whether_an_existing_file_held_other_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    assert workdir_lib.write_rows(path, [{"step": 1}]) is False  # new file
    assert workdir_lib.write_rows(path, [{"step": 1}]) is False  # the same rows
    assert workdir_lib.write_rows(path, [{"step": 1}, {"step": 2}]) is True
    path.write_text('{"step": 1}\n{"step": 2, "val')  # torn: same line count, other text
    assert workdir_lib.write_rows(path, [{"step": 1}, {"step": 2}]) is True
    assert workdir_lib.read_rows(path) == [{"step": 1}, {"step": 2}]


def test_rows_round_trip_and_torn_last_line(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    workdir_lib.write_rows(path, [{"step": 1}])
    workdir_lib.append_rows(path, [{"step": 2}, {"step": 3}])
    assert workdir_lib.read_rows(path) == [{"step": 1}, {"step": 2}, {"step": 3}]
    with open(path, "a") as file:
        file.write('{"step": 4, "val_')
    assert workdir_lib.read_rows(path) == [{"step": 1}, {"step": 2}, {"step": 3}]
    assert "dropped the torn last line 4" in caplog.text and str(path) in caplog.text
    path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
    with pytest.raises(WorkdirError, match=r"metrics.jsonl, line 2: not a JSON row"):
        workdir_lib.read_rows(path)


def _arrays(value: float):
    return {"w": np.full((3,), value, np.float32), "step": np.asarray(int(value), np.int32)}


def test_checkpoints_save_and_restore_arrays_with_their_json(tmp_path):
    checkpoints = workdir_lib.Checkpoints(tmp_path)
    assert checkpoints.restore(_arrays(0)) is None
    checkpoints.save(5, _arrays(5), {"rows": [1, 2]})
    checkpoints.wait()
    step, arrays, meta = checkpoints.restore(_arrays(0))
    assert step == 5 and meta == {"rows": [1, 2]}
    np.testing.assert_array_equal(arrays["w"], [5, 5, 5])
    checkpoints.close()


def _damage(step_dir: Path) -> None:
    for path in step_dir.rglob("*"):
        if path.is_file() and path.name != "_CHECKPOINT_METADATA":
            path.write_bytes(b"\x00garbage")


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, caplog):
    checkpoints = workdir_lib.Checkpoints(tmp_path)
    for step in (1, 2):
        checkpoints.save(step, _arrays(step), {"step": step})
    checkpoints.wait()
    _damage(checkpoints.directory / "2")
    step, arrays, meta = checkpoints.restore(_arrays(0))
    assert step == 1 and meta == {"step": 1}
    assert "Checkpoint" in caplog.text and "/checkpoints/2 cannot be restored" in caplog.text
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["1"]  # damaged one gone
    checkpoints.save(2, _arrays(2), {"step": 2})  # so step 2 can be saved again
    checkpoints.close()


def test_no_restorable_checkpoint_names_steps_and_folder(tmp_path):
    checkpoints = workdir_lib.Checkpoints(tmp_path)
    checkpoints.save(3, _arrays(3), {})
    checkpoints.wait()
    _damage(checkpoints.directory / "3")
    with pytest.raises(WorkdirError, match=r"No checkpoint in .*checkpoints can be restored: "
                                           r"step 3 \("):
        checkpoints.restore(_arrays(0))
    checkpoints.close()


def test_a_checkpoint_failure_is_reported_by_its_first_line_cut_short():
    """TensorStore errors carry kilobytes of JSON spec on one line; the report keeps 160 chars."""
    error = ValueError('Error opening "zarr" driver: {"spec": ' + "x" * 5000 + '}\nmore')
    reason = workdir_lib._short_reason(error)
    assert len(reason) == 160 and reason.endswith("…")
    assert reason.startswith('ValueError: Error opening "zarr" driver: {"spec": xxx')
    assert workdir_lib._short_reason(OSError("short\nsecond line")) == "OSError: short"


@pytest.mark.slow
def test_metric_writer_writes_scalars_tensorboard_reads(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = workdir_lib.MetricWriter(tmp_path)
    writer.write_hparams({"learning_rate": 0.001, "optimizer": "adam", "skip": [1, 2]})
    writer.write_scalars(10, {"val_loss": 0.5, "train_loss": 0.25})
    writer.write_scalars(20, {"val_loss": 0.4})
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["train_loss", "val_loss"]
    assert [(e.step, e.value) for e in events.Scalars("val_loss")] == [
        (10, pytest.approx(0.5)), (20, pytest.approx(0.4))]
    quiet = tmp_path / "quiet"
    quiet.mkdir()
    disabled = workdir_lib.MetricWriter(quiet, enabled=False)
    disabled.write_scalars(1, {"x": 1.0})
    disabled.close()
    assert not any(quiet.iterdir())


def test_write_text_atomically_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "summary.json"
    workdir_lib.write_text_atomically(path, json.dumps({"a": 1}))
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_remove_unfinished_deletes_half_written_checkpoints_only(tmp_path):
    checkpoints = workdir_lib.Checkpoints(tmp_path)
    checkpoints.save(1, _arrays(1), {})
    checkpoints.wait()
    stale = checkpoints.directory / "2.orbax-checkpoint-tmp-1234"
    (stale / "arrays").mkdir(parents=True)
    assert checkpoints.remove_unfinished() == [stale]
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["1"]
    checkpoints.close()


@pytest.mark.slow
def test_metric_writer_writes_histograms_tensorboard_reads(tmp_path):
    """#20: a and b as TensorBoard histograms (count, range and sum kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    writer = workdir_lib.MetricWriter(tmp_path)
    values = np.linspace(0.5, 1.5, 100)
    writer.write_histograms(4, {"conv_act_0/a": values, "conv_act_0/b": np.zeros(3)})
    writer.write_histograms(8, {})  # nothing to write
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert sorted(events.Tags()["histograms"]) == ["conv_act_0/a", "conv_act_0/b"]
    (event,) = events.Histograms("conv_act_0/a")
    assert event.step == 4
    assert (event.histogram_value.num, event.histogram_value.min, event.histogram_value.max) == (
        100, 0.5, 1.5)
    assert sum(event.histogram_value.bucket) == 100
    assert event.histogram_value.sum == pytest.approx(values.sum())


def test_a_run_writes_each_agile_layers_histograms_at_each_evaluation(tmp_path, tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from agile.paper import train

    train.train_and_evaluate(tiny_config, tmp_path)
    events = EventAccumulator(str(tmp_path), size_guidance={"histograms": 0})  # keep all
    events.Reload()
    tags = sorted(events.Tags()["histograms"])
    assert tags == [f"{layer}/{p}" for layer in ("conv_act_0", "conv_act_1", "conv_act_2",
                                                  "hidden_act") for p in ("a", "b")]
    assert [e.step for e in events.Histograms("hidden_act/a")] == [4, 8]


def test_a_full_disk_while_writing_a_file_names_the_file(tmp_path, monkeypatch):
    """N001: a sweep on a full disk said "Cannot write a file: [Errno 28] ..." (a full disk fails
    write() with no file name). The error names the file, and no temporary file is left."""
    import errno

    from agile.paper import cli, files

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", full)
    target = tmp_path / "sweep.json"
    with pytest.raises(OSError) as err:
        files.write_text_atomically(target, "{}\n")
    assert cli.user_error_message(err.value) == (
        f"Cannot write {target}: [Errno 28] No space left on device.")
    assert list(tmp_path.iterdir()) == []


def test_an_immutable_rows_file_is_one_line_naming_it(tmp_path, monkeypatch):
    """N119: ``chattr +i metrics.jsonl`` made the rerun a 29-line PermissionError traceback
    (EPERM was not a disk error). A run says it in one line naming the file; EPERM without a
    file (a bug's) keeps its traceback."""
    import errno

    from agile.paper import cli, files

    rows = tmp_path / "metrics.jsonl"

    def immutable(source, target):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(source), str(target))

    monkeypatch.setattr(files.os, "replace", immutable)
    with pytest.raises(WorkdirError, match=(
            rf"^Cannot write to {rows}: \[Errno 1\] Operation not permitted; no checkpoint was "
            r"complete. Free space \(or make the folder writable\) and rerun the same command "
            r"to resume.$")):
        with workdir_lib.disk_errors(tmp_path):
            files.write_rows(rows, [{"step": 1}])
    assert cli.user_error_message(PermissionError(errno.EPERM, "Operation not permitted",
                                                  str(rows))) == (
        f"Cannot write {rows}: [Errno 1] Operation not permitted.")
    assert cli.user_error_message(PermissionError(errno.EPERM, "Operation not permitted")) is None


def test_after_ctrl_c_orbax_thread_failures_go_to_its_log_not_the_terminal(tmp_path, capsys,
                                                                          monkeypatch):
    """#57: Ctrl-C as a save started printed orbax's background thread's traceback ("cannot
    schedule new futures after shutdown") on the terminal as the process ended. After a
    KeyboardInterrupt the diversion to orbax.log stays (the process is ending); after a
    normal end it is undone."""
    import logging
    import threading

    from absl import logging as absl_logging

    before = threading.excepthook
    monkeypatch.setattr(threading, "excepthook", before)  # restored after the test
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    loggers = [absl_logging.get_absl_logger(), logging.getLogger("asyncio")]
    filters = [list(logger.filters) for logger in loggers]
    log = tmp_path / "orbax.log"
    with workdir_lib.dependency_output(log):
        pass
    assert threading.excepthook is before
    assert [list(logger.filters) for logger in loggers] == filters

    def fail():
        raise RuntimeError("cannot schedule new futures after shutdown")

    try:
        with pytest.raises(KeyboardInterrupt):
            with workdir_lib.dependency_output(log):
                raise KeyboardInterrupt
        thread = threading.Thread(target=fail, name="orbax-save")
        thread.start()
        thread.join()
        logging.getLogger("asyncio").error("Future exception was never retrieved")
    finally:
        for logger, kept in zip(loggers, filters, strict=True):
            for added in [f for f in logger.filters if f not in kept]:
                logger.removeFilter(added)
    assert "cannot schedule new futures" not in capsys.readouterr().err
    text = log.read_text()
    assert "Exception in thread orbax-save" in text and "RuntimeError: cannot schedule" in text
    assert "Future exception was never retrieved" in text
