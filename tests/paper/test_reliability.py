"""A workdir is never silently damaged: rows rebuilt from checkpoints, config guard, damaged
checkpoints, NaN stops naming a finished checkpoint, one run per workdir."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from agile_testing import REPO_ROOT, first_fast  # noqa: E402
from paper_testing import Interrupt, interrupt_after, make_tiny_config, strip_times

from agile.paper import train
from agile.paper.workdir import WorkdirError, read_rows


@pytest.fixture(scope="module")
def _reference_run(tmp_path_factory, synthetic_mnist_dir):
    """The uninterrupted run :func:`reference` copies, trained once per test process."""
    config = make_tiny_config(synthetic_mnist_dir)
    config.num_epochs = 3
    workdir = tmp_path_factory.mktemp("reference_run")
    return workdir, train.train_and_evaluate(config, workdir)


@pytest.fixture
def reference(tmp_path_factory, tiny_config, _reference_run):
    """A fresh copy of an uninterrupted 3-epoch run (12 steps, rows at 4, 8, 12, checkpoints
    every 2 steps) for each test to damage, and its summary; ``tiny_config`` is its config."""
    tiny_config.num_epochs = 3
    source, summary = _reference_run
    workdir = tmp_path_factory.mktemp("reference")
    shutil.copytree(source, workdir, dirs_exist_ok=True)
    return workdir, dict(summary)


def test_deleted_rows_of_a_finished_run_are_rebuilt_not_nulled(tmp_path, tiny_config, reference):
    ref_dir, ref_summary = reference
    rows = (ref_dir / "metrics.jsonl").read_text()
    (ref_dir / "metrics.jsonl").unlink()
    again = train.train_and_evaluate(tiny_config, ref_dir)
    assert again == ref_summary and again["best_test_loss"] is not None
    assert (ref_dir / "metrics.jsonl").read_text() == rows


def test_a_rebuilt_rows_file_says_so(tiny_config, reference, caplog):
    """#61, #62: docs/experiments.md promises a warning whenever metrics.jsonl is repaired."""
    ref_dir, _ = reference
    (ref_dir / "metrics.jsonl").unlink()
    train.train_and_evaluate(tiny_config, ref_dir)
    assert "metrics.jsonl was missing; rebuilt from the checkpoint's history (3 rows)" in (
        caplog.text)


def test_a_folder_in_place_of_the_rows_file_is_one_line(tiny_config, reference):
    """#181: metrics.jsonl is a directory."""
    ref_dir, _ = reference
    (ref_dir / "metrics.jsonl").unlink()
    (ref_dir / "metrics.jsonl").mkdir()
    with pytest.raises(WorkdirError, match=r"metrics.jsonl is a folder, not the run's rows file; "
                                           r"move it away and rerun"):
        train.train_and_evaluate(tiny_config, ref_dir)


def test_torn_last_row_of_a_finished_run_is_rebuilt_with_a_warning(tiny_config, reference,
                                                                     caplog):
    """Same line count, damaged text: still rewritten from the checkpoint, and said so."""
    ref_dir, ref_summary = reference
    rows = (ref_dir / "metrics.jsonl").read_text()
    (ref_dir / "metrics.jsonl").write_text(rows[:-20] + "\n")
    again = train.train_and_evaluate(tiny_config, ref_dir)
    assert again == ref_summary
    assert (ref_dir / "metrics.jsonl").read_text() == rows
    assert "differed from the checkpoint's history" in caplog.text


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["delete", "truncate", "torn_line"])
def test_damaged_rows_mid_run_are_rebuilt_from_the_checkpoint(tmp_path, tiny_config, reference,
                                                               damage, caplog):
    ref_dir, ref_summary = reference
    workdir = tmp_path / "run"
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, workdir, after_step=interrupt_after(11))
    rows_path = workdir / "metrics.jsonl"
    assert len(read_rows(rows_path)) == 2  # steps 4 and 8; the checkpoint is at step 10
    if damage == "delete":
        rows_path.unlink()
    elif damage == "truncate":
        rows_path.write_text(rows_path.read_text().splitlines()[0] + "\n")
    else:
        rows_path.write_text(rows_path.read_text() + '{"step": 12, "train_lo')
    resumed = train.train_and_evaluate(tiny_config, workdir)
    assert strip_times(resumed) == strip_times(ref_summary)
    assert rows_path.read_text() == (ref_dir / "metrics.jsonl").read_text()
    if damage != "delete":
        assert "rewritten from the checkpoint" in caplog.text


@pytest.mark.slow
def test_failed_resume_with_allowed_change_keeps_config_json(tmp_path, tiny_config, reference):
    """A model change (#65, #108) is refused by name before anything is restored, even with
    allow_config_change; config.json and the (intact) checkpoints are kept. Without a
    config.json to say so, orbax finds the other shapes: reported as another model, never as
    damage, and nothing is deleted."""
    ref_dir, _ = reference
    saved = (ref_dir / "config.json").read_text()
    tiny_config.allow_config_change = True
    tiny_config.model.dense_features = 31  # other parameter shapes: cannot restore
    with pytest.raises(WorkdirError, match=r"holds checkpoints of a run with other "
                                           r"model.dense_features: a resume cannot change that"):
        train.train_and_evaluate(tiny_config, ref_dir)
    assert (ref_dir / "config.json").read_text() == saved
    (ref_dir / "config.json").unlink()
    # Orbax restores arrays concurrently: the one it names may be any with a dimension 31.
    with pytest.raises(WorkdirError, match=r"Checkpoint .*checkpoints/12 was saved by another "
                                           r"model or optimizer than this config's \(ValueError: "
                                           r"Requested shape: \([^)]*31[^)]*\) is not compatible "
                                           r"with the stored shape: \([^)]*30[^)]*\)\): a resume "
                                           r"cannot change that. Use a new --workdir"):
        train.train_and_evaluate(tiny_config, ref_dir)
    assert not (ref_dir / "config.json").exists()  # written only once a resume is accepted
    assert sorted(int(p.name) for p in (ref_dir / "checkpoints").iterdir()
                  if p.name.isdigit()) == [10, 12]  # healthy checkpoints: nothing deleted


def test_checkpoints_without_config_json_are_refused_unless_allowed(tiny_config, reference):
    ref_dir, ref_summary = reference
    (ref_dir / "config.json").unlink()
    with pytest.raises(WorkdirError, match="holds checkpoints but no config.json"):
        train.train_and_evaluate(tiny_config, ref_dir)
    tiny_config.allow_config_change = True
    assert strip_times(train.train_and_evaluate(tiny_config, ref_dir)) == strip_times(
        ref_summary)
    assert (ref_dir / "config.json").exists()


def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, tiny_config, reference,
                                                              caplog):
    ref_dir, ref_summary = reference
    caplog.set_level("INFO")
    workdir = tmp_path / "run"
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, workdir, after_step=interrupt_after(11))
    for path in (workdir / "checkpoints" / "10").rglob("*"):
        if path.is_file() and path.name != "_CHECKPOINT_METADATA":
            path.write_bytes(b"damaged")
    resumed = train.train_and_evaluate(tiny_config, workdir)
    assert "checkpoints/10 cannot be restored" in caplog.text
    assert "Resumed from the checkpoint at step 8" in caplog.text
    assert strip_times(resumed) == strip_times(ref_summary)
    assert (workdir / "metrics.jsonl").read_text() == (ref_dir / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_nan_stop_names_a_finished_checkpoint(tmp_path, tiny_config):
    tiny_config.optimizer = "sgd"
    tiny_config.learning_rate = tiny_config.agile_learning_rate = 1e30
    with pytest.raises(train.NonFiniteLossError, match=r"NaN or inf at step \d+") as info:
        train.train_and_evaluate(tiny_config, tmp_path)
    message = str(info.value)
    bad_step = int(message.split("at step ")[1].split(";")[0])
    saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert all(step < bad_step for step in saved)
    assert not list((tmp_path / "checkpoints").glob("*tmp*"))  # nothing left half-written
    if saved:
        assert f"last good checkpoint (step {saved[-1]}) is kept in" in message
    else:
        assert "no checkpoint was saved" in message
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_second_run_on_a_workdir_in_use_exits_at_once_naming_the_first(tmp_path,
                                                                       synthetic_mnist_dir):
    workdir = tmp_path / "run"
    flags = ["--config=configs/combo_12.py", f"--workdir={workdir}", "--config.batch_size=50",
             "--config.data.train_size=200", "--config.data.val_size=100",
             "--config.data.test_size=100", "--config.num_epochs=200"]
    env = {**os.environ, "MNIST_DIR": str(synthetic_mnist_dir)}
    first = subprocess.Popen([sys.executable, "scripts/train.py", *flags], cwd=REPO_ROOT,
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        guard = time.monotonic() + 300  # bounds a hang only
        while not (workdir / "metrics.jsonl").exists():  # written once the lock is held
            assert first.poll() is None and time.monotonic() < guard
            time.sleep(0.2)
        # Frozen, the first run holds its lock for as long as the second takes (it could not
        # finish first on a fast machine); the second can only return by not waiting for it.
        first.send_signal(signal.SIGSTOP)
        second = subprocess.run([sys.executable, "scripts/train.py", *flags], cwd=REPO_ROOT,
                                env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert f"is in use by process {first.pid} on" in second.stderr
        assert "Traceback" not in second.stderr
        first.send_signal(signal.SIGCONT)
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()
    json.loads((workdir / "config.json").read_text())  # intact


@pytest.mark.slow
def test_resume_applies_a_changed_patience(tmp_path, tiny_config):
    """#113: a resume with another patience (allow_config_change) stops early as an
    uninterrupted run with that patience does, and config.json says what was used."""
    tiny_config.num_epochs = 30
    tiny_config.learning_rate = tiny_config.agile_learning_rate = 0.3  # stops improving soon
    tiny_config.patience = 2
    uninterrupted = train.train_and_evaluate(tiny_config, tmp_path / "patience_2")
    assert uninterrupted["early_stopped"]
    tiny_config.patience = 0  # never stops
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, tmp_path / "resumed", after_step=interrupt_after(5))
    tiny_config.patience, tiny_config.allow_config_change = 2, True
    resumed = train.train_and_evaluate(tiny_config, tmp_path / "resumed")
    assert resumed["early_stopped"]
    assert resumed["best_step"] == uninterrupted["best_step"]
    assert resumed["steps"] == uninterrupted["steps"]
    assert json.loads((tmp_path / "resumed" / "config.json").read_text())["patience"] == 2


@pytest.mark.parametrize("field, value", first_fast(
    [("data.val_size", 0), ("num_seeds", 2), ("seed", 3), ("batch_size", 25),
     ("optimizer", "sgd")], 2, multiple_args=True))
def test_resume_refuses_a_change_it_cannot_apply_by_name(tiny_config, reference, field, value):
    """#114, #108: fields that decide the data, the seeds, the model or the optimizer's state
    are refused before anything runs, even with allow_config_change; config.json is kept."""
    ref_dir, _ = reference
    saved = (ref_dir / "config.json").read_text()
    section, _, name = field.rpartition(".")
    (tiny_config[section] if section else tiny_config)[name] = value
    tiny_config.allow_config_change = True
    with pytest.raises(WorkdirError, match=rf"holds checkpoints of a run with other {field}: a "
                                           "resume cannot change that"):
        train.train_and_evaluate(tiny_config, ref_dir)
    assert (ref_dir / "config.json").read_text() == saved


def test_data_parallel_runs_record_their_device_count(tiny_config, monkeypatch, tmp_path, caplog):
    """#106: config.json records how many devices a pmap/shard_map run splits its batch over;
    a resume on another count is refused unless allowed, and then warned about."""
    tiny_config.parallel = "shard_map"
    assert train.run_config(tiny_config)["devices"] == 1
    tiny_config.parallel = "none"
    assert "devices" not in train.run_config(tiny_config)
    train._warn_rounding_change({"devices": 4, "xla_cpu_threads": None}, {"devices": 2},
                                step=60)
    assert "Resuming a run trained with devices=4 with devices=2: allowed" in caplog.text


def test_a_resume_under_another_xla_thread_count_is_refused_unless_allowed(
        tmp_path, tiny_config, monkeypatch, caplog):
    """#28 N061: config.json records XLA:CPU's thread count (NPROC), which splits its sums;
    a resume with another is refused unless allowed, and then warned about."""
    monkeypatch.setenv("NPROC", "2")
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, tmp_path, after_step=interrupt_after(5))
    assert json.loads((tmp_path / "config.json").read_text())["xla_cpu_threads"] == 2
    monkeypatch.setenv("NPROC", "1")
    with pytest.raises(WorkdirError, match=r"different config \(fields: xla_cpu_threads\)"):
        train.train_and_evaluate(tiny_config, tmp_path)
    tiny_config.allow_config_change = True
    train.train_and_evaluate(tiny_config, tmp_path)
    assert "trained with xla_cpu_threads=2 with xla_cpu_threads=1: allowed" in caplog.text


def test_disk_full_during_a_run_is_one_line_naming_the_last_checkpoint(tmp_path, tiny_config,
                                                                       monkeypatch):
    """#117: a full disk while saving: one WorkdirError line with the errno and the last
    complete checkpoint, which the rerun resumes from (no chained tracebacks)."""
    import errno

    from agile.paper import workdir as workdir_lib

    real_save = workdir_lib.Checkpoints.save

    def save(self, step, arrays, meta):
        if step >= 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / "4"))
        real_save(self, step, arrays, meta)

    monkeypatch.setattr(workdir_lib.Checkpoints, "save", save)
    message = (r"Cannot write to .*checkpoints/4: \[Errno 28\] No space left on device; the last "
               r"complete checkpoint \(step 2\) is kept in .*checkpoints. Free space")
    with pytest.raises(WorkdirError, match=message) as err:
        train.train_and_evaluate(tiny_config, tmp_path)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    monkeypatch.setattr(workdir_lib.Checkpoints, "save", real_save)
    assert train.train_and_evaluate(tiny_config, tmp_path)["steps"] == 8


def test_a_lock_that_cannot_be_written_leaves_no_lock_file(tmp_path, monkeypatch):
    """#118: a disk already full at start: one line, and no empty .lock left behind."""
    import builtins
    import errno

    from agile.paper import workdir as workdir_lib

    class Full:
        def __init__(self, file):
            self._file = file

        def __getattr__(self, name):
            return getattr(self._file, name)

        def flush(self):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: Full(real_open(path, *a, **k))
                        if str(path).endswith(".lock") else real_open(path, *a, **k))
    with pytest.raises(WorkdirError, match=r"Cannot lock workdir .*: writing .*\.lock failed "
                                           r"\(\[Errno 28\] No space left on device\)"):
        with workdir_lib.Lock(tmp_path):
            pass
    assert not (tmp_path / ".lock").exists()


def test_dependency_output_goes_to_its_log_file(tmp_path, capsys):
    """#57, #58: orbax's log records and the tracebacks of background threads, unraisable
    exceptions and C++ callbacks go to the log file, not the terminal; nothing else does."""
    import logging as std_logging
    import threading

    from absl import logging

    from agile.paper import workdir as workdir_lib

    log = tmp_path / "orbax.log"
    with workdir_lib.dependency_output(log):
        record = logging.get_absl_logger().makeRecord(
            "absl", std_logging.ERROR, "/site-packages/orbax/checkpoint/x.py", 1, "orbax failed",
            (), None)
        logging.get_absl_logger().handle(record)
        thread = threading.Thread(target=lambda: 1 / 0, name="save_finalize")
        thread.start()
        thread.join()
        sys.excepthook(RuntimeError, RuntimeError("Event loop is closed"), None)
    text = log.read_text()
    assert "orbax failed" in text and "Exception in thread save_finalize" in text
    assert "ZeroDivisionError" in text and "Event loop is closed" in text
    captured = capsys.readouterr()
    assert "orbax failed" not in captured.err and "ZeroDivisionError" not in captured.err
    quiet = tmp_path / "quiet.log"
    with workdir_lib.dependency_output(quiet):
        pass
    assert not quiet.exists()  # opened on the first message only
