"""A workdir is never silently damaged: rows rebuilt from checkpoints, config guard, damaged
checkpoints, NaN stops naming a finished checkpoint, one run per workdir."""

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO_ROOT  # noqa: E402

from agile.paper import train
from agile.paper.summary import TIMING_FIELDS
from agile.paper.workdir import WorkdirError, read_rows


def _strip_times(summary):
    return {k: v for k, v in summary.items() if k not in TIMING_FIELDS}


class Interrupt(Exception):
    pass


def _interrupt_after(step):
    def after_step(current):
        if current == step:
            raise Interrupt

    return after_step


@pytest.fixture
def reference(tmp_path_factory, tiny_config):
    """An uninterrupted 3-epoch run (12 steps, rows at 4, 8, 12, checkpoints every 2 steps)."""
    tiny_config.num_epochs = 3
    workdir = tmp_path_factory.mktemp("reference")
    summary = train.train_and_evaluate(tiny_config, workdir)
    return workdir, summary


def test_deleted_rows_of_a_finished_run_are_rebuilt_not_nulled(tmp_path, tiny_config, reference):
    ref_dir, ref_summary = reference
    rows = (ref_dir / "metrics.jsonl").read_text()
    (ref_dir / "metrics.jsonl").unlink()
    again = train.train_and_evaluate(tiny_config, ref_dir)
    assert again == ref_summary and again["best_test_loss"] is not None
    assert (ref_dir / "metrics.jsonl").read_text() == rows


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


@pytest.mark.parametrize("damage", ["delete", "truncate", "torn_line"])
def test_damaged_rows_mid_run_are_rebuilt_from_the_checkpoint(tmp_path, tiny_config, reference,
                                                               damage, caplog):
    ref_dir, ref_summary = reference
    workdir = tmp_path / "run"
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, workdir, after_step=_interrupt_after(11))
    rows_path = workdir / "metrics.jsonl"
    assert len(read_rows(rows_path)) == 2  # steps 4 and 8; the checkpoint is at step 10
    if damage == "delete":
        rows_path.unlink()
    elif damage == "truncate":
        rows_path.write_text(rows_path.read_text().splitlines()[0] + "\n")
    else:
        rows_path.write_text(rows_path.read_text() + '{"step": 12, "train_lo')
    resumed = train.train_and_evaluate(tiny_config, workdir)
    assert _strip_times(resumed) == _strip_times(ref_summary)
    assert rows_path.read_text() == (ref_dir / "metrics.jsonl").read_text()
    if damage != "delete":
        assert "rewritten from the checkpoint" in caplog.text


def test_failed_resume_with_allowed_change_keeps_config_json(tmp_path, tiny_config, reference):
    ref_dir, _ = reference
    saved = (ref_dir / "config.json").read_text()
    tiny_config.allow_config_change = True
    tiny_config.model.dense_features = 31  # other parameter shapes: cannot restore
    # Orbax restores arrays concurrently: the one it names may be any with a dimension 31.
    with pytest.raises(WorkdirError, match=r"Checkpoint .*checkpoints/12 holds arrays of other "
                                           r"shapes than this config's model \(ValueError: "
                                           r"Requested shape: \([^)]*31[^)]*\) is not compatible "
                                           r"with the stored shape: \([^)]*30[^)]*\)\): .*"
                                           r"allow_config_change cannot resume. Use a new "
                                           r"--workdir."):
        train.train_and_evaluate(tiny_config, ref_dir)
    assert (ref_dir / "config.json").read_text() == saved
    assert sorted(int(p.name) for p in (ref_dir / "checkpoints").iterdir()
                  if p.name.isdigit()) == [10, 12]  # healthy checkpoints: nothing deleted


def test_checkpoints_without_config_json_are_refused_unless_allowed(tiny_config, reference):
    ref_dir, ref_summary = reference
    (ref_dir / "config.json").unlink()
    with pytest.raises(WorkdirError, match="holds checkpoints but no config.json"):
        train.train_and_evaluate(tiny_config, ref_dir)
    tiny_config.allow_config_change = True
    assert _strip_times(train.train_and_evaluate(tiny_config, ref_dir)) == _strip_times(
        ref_summary)
    assert (ref_dir / "config.json").exists()


def test_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path, tiny_config, reference,
                                                              caplog):
    ref_dir, ref_summary = reference
    caplog.set_level("INFO")
    workdir = tmp_path / "run"
    with pytest.raises(Interrupt):
        train.train_and_evaluate(tiny_config, workdir, after_step=_interrupt_after(11))
    for path in (workdir / "checkpoints" / "10").rglob("*"):
        if path.is_file() and path.name != "_CHECKPOINT_METADATA":
            path.write_bytes(b"damaged")
    resumed = train.train_and_evaluate(tiny_config, workdir)
    assert "checkpoints/10 cannot be restored" in caplog.text
    assert "Resumed from the checkpoint at step 8" in caplog.text
    assert _strip_times(resumed) == _strip_times(ref_summary)
    assert (workdir / "metrics.jsonl").read_text() == (ref_dir / "metrics.jsonl").read_text()


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
        deadline = time.monotonic() + 300
        while not (workdir / "metrics.jsonl").exists():  # written once the lock is held
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        start = time.monotonic()
        second = subprocess.run([sys.executable, "scripts/train.py", *flags], cwd=REPO_ROOT,
                                env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert f"is in use by process {first.pid} on" in second.stderr
        assert "Traceback" not in second.stderr and time.monotonic() - start < 60
        assert first.poll() is None  # the first run goes on
    finally:
        first.kill()
        first.wait()
    json.loads((workdir / "config.json").read_text())  # intact
