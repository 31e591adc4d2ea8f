"""The sweep tables (agile/paper/sweep.py) and scripts/sweep.py end to end on synthetic MNIST."""

import csv
import io
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from agile_testing import REPO_ROOT  # noqa: E402

from agile.paper import stats, sweep
from agile.paper import trials as trials_lib
from agile.paper.combos import COMBOS
from agile.paper.config import get_config
from agile.paper.workdir import WorkdirError


def _seed_result(seed: int, loss: float) -> dict:
    return {
        "combo": 12, "conv_activation": "agile_relu", "dense_activation": "agile_sigmoid",
        "seed": seed, "steps": 100, "best_step": 50 + seed, "best_test_loss": loss,
        "final_test_loss": loss + 0.01, "best_test_accuracy": 0.9, "final_test_accuracy": 0.91,
        "agile_ranges": {"conv_act_0/a": {"min": 0.5, "max": 1.5, "mean": 1.0},
                         "hidden_act/a": {"min": 0.2, "max": 1.1, "mean": 0.9},
                         "hidden_act/b": {"min": -0.3, "max": 0.4, "mean": 0.0}},
        "wall_time_s": 3.0,
    }


def test_mean_std_ci_uses_the_t_distribution():
    mean, std, half_width = stats.mean_std_ci([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0)
    assert half_width == pytest.approx(4.302652729911275 / math.sqrt(3))  # t(0.975, df=2)
    assert stats.mean_std_ci([5.0])[:2] == (5.0, 0.0) and math.isnan(stats.mean_std_ci([5.0])[2])


def _rows(summary, trial=None):
    return [result.row() for result in trials_lib.seed_results(summary, trial)]


def test_seed_results_one_per_seed_with_agile_ranges():
    summary = {"seeds": [_seed_result(0, 0.2), _seed_result(1, 0.3)]}
    rows = _rows(summary)
    assert [row["seed"] for row in rows] == [0, 1]
    assert rows[0]["trial"] == "combo_12" and _rows(summary, "x")[0]["trial"] == "x"
    assert (rows[0]["a_min"], rows[0]["a_max"], rows[0]["b_min"], rows[0]["b_max"]) == (
        0.2, 1.5, -0.3, 0.4)
    single = _rows(_seed_result(7, 0.2) | {"agile_ranges": {}})
    assert len(single) == 1 and single[0]["a_min"] is None
    parsed = list(csv.DictReader(io.StringIO(sweep.write_csv(rows))))
    assert tuple(parsed[0]) == trials_lib.CSV_FIELDS and parsed[1]["best_test_loss"] == "0.3"


def test_results_markdown_has_mean_std_ci_and_paper_loss():
    rows = _rows({"seeds": [_seed_result(s, 0.1 + 0.1 * s) for s in range(3)]})
    table = sweep.results_markdown(rows)
    mean, std, half = stats.mean_std_ci([0.1, 0.2, 0.3])
    assert f"{mean:.4f} ± {std:.4f} [{mean - half:.4f}, {mean + half:.4f}]" in table
    assert "0.15027" in table  # Table 1's loss for combo 12
    assert "| combo_12 | agile_relu / agile_sigmoid | 3 |" in table


def test_trial_names_and_trials_for_pairs():
    base = get_config()
    pairs = [COMBOS[7], ("agile_tanh", "combined:relu,sigmoid")]
    trials = trials_lib.trials_for_pairs(base, pairs, 3)
    assert [t.name for t in trials] == ["combo_07", "agile_tanh-combined_relu+sigmoid"]
    assert trials[1].config.model.conv_activation == "agile_tanh"
    assert trials[1].config.num_seeds == 3 and base.num_seeds == 1  # the base is not changed
    with pytest.raises(ValueError, match="lists a trial twice"):
        trials_lib.trials_for_pairs(base, [COMBOS[7], COMBOS[7]], 1)


@pytest.mark.parametrize("values, message", [
    (["7", "7"], r"--combos lists row 7 twice"),
    (["13"], r"--combos takes Table 1 rows 1..12, got '13'"),
    (["x"], r"--combos takes Table 1 rows 1..12, got 'x'"),
    ([], r"--combos is empty"),
])
def test_parse_combos_refuses_bad_lists(values, message):
    with pytest.raises(ValueError, match=message):
        trials_lib.parse_combos(values)
    assert trials_lib.parse_combos(["12", " 3"]) == [12, 3]


def test_sweep_folder_refuses_other_settings(tmp_path):
    base = get_config()
    sweep.claim_folder(tmp_path, trials_lib.settings(base, 4))
    sweep.claim_folder(tmp_path, trials_lib.settings(base, 4))  # same settings: fine
    other = base.copy_and_resolve_references()
    other.num_epochs, other.model.conv_activation = 3, "agile_relu"
    with pytest.raises(sweep.SweepError, match=r"other settings \(config.num_epochs, seeds\)"):
        sweep.claim_folder(tmp_path, trials_lib.settings(other, 2))
    activations_only = base.copy_and_resolve_references()
    activations_only.model.dense_activation = "agile_sigmoid"  # set per trial: not a setting
    sweep.claim_folder(tmp_path, trials_lib.settings(activations_only, 4))


def test_damaged_sweep_json_and_trial_summary_are_named_with_what_to_do(tmp_path):
    (tmp_path / "sweep.json").write_text('{"seeds": 4')
    with pytest.raises(WorkdirError, match=r"sweep.json is not valid JSON \(.*\); delete it to "
                                           r"let this sweep claim .* \(its trials are kept\)"):
        sweep.claim_folder(tmp_path, trials_lib.settings(get_config(), 4))
    trial = trials_lib.trials_for_pairs(get_config(), [COMBOS[7]], 1)[0]
    (tmp_path / trial.name).mkdir()
    (tmp_path / trial.name / "summary.json").write_text("{")
    with pytest.raises(WorkdirError, match=r"summary.json is not valid JSON \(.*\); delete it "
                                           r"and rerun: the trial restores its last checkpoint"):
        sweep.finished_summary(tmp_path, trial)
    with pytest.raises(WorkdirError, match=r"summary.json is not valid JSON"):
        sweep.write_tables(tmp_path)


def test_write_tables_cover_every_finished_trial(tmp_path):
    for name, seed in (("combo_12", 0), ("combo_07", 1)):
        (tmp_path / name).mkdir()
        result = _seed_result(seed, 0.2) | ({"combo": 7, "conv_activation": "relu",
                                             "dense_activation": "relu"} if seed else {})
        (tmp_path / name / "summary.json").write_text(json.dumps(result))
    (tmp_path / "combo_03").mkdir()  # unfinished: no summary
    rows = sweep.write_tables(tmp_path)
    assert [row["trial"] for row in rows] == ["combo_07", "combo_12"]
    assert len(list(csv.DictReader((tmp_path / "results.csv").open()))) == 2
    assert "| combo_07 | relu / relu | 1 |" in (tmp_path / "results.md").read_text()


@pytest.mark.slow
def test_sweep_script_end_to_end_and_skips_finished_combos(tmp_path, synthetic_mnist_dir):
    data_dir = os.environ.get("MNIST_DIR") or str(synthetic_mnist_dir)
    command = [
        sys.executable, "scripts/sweep.py", f"--workdir={tmp_path}", "--seeds=2", "--combos=7,12",
        "--config.num_epochs=1", "--config.batch_size=50", "--config.data.train_size=200",
        "--config.data.val_size=0", "--config.data.test_size=100",
    ]
    env = {**os.environ, "MNIST_DIR": data_dir}
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert [(row["trial"], row["seed"]) for row in rows] == [
        ("combo_07", "0"), ("combo_07", "1"), ("combo_12", "0"), ("combo_12", "1")]
    assert all(np.isfinite(float(row["final_test_loss"])) for row in rows)
    table = (tmp_path / "results.md").read_text()
    assert "| combo_07 | relu / relu | 2 |" in table and "0.18127" in table
    assert "| combo_12 | agile_relu / agile_sigmoid | 2 |" in table
    rerun = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stderr.count("already finished; skipping") == 2
    assert (tmp_path / "results.md").read_text() == table
    other = subprocess.run([*command, "--config.num_epochs=2"],
                           cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and "Traceback" not in other.stderr
    assert "holds a sweep with other settings (config.num_epochs)" in other.stderr
    duplicate = subprocess.run([*command, "--combos=7,7"], cwd=REPO_ROOT, env=env,
                               capture_output=True, text=True, timeout=600)
    assert duplicate.returncode == 2 and "error: --combos lists row 7 twice" in duplicate.stderr


def test_cpu_groups_split_the_cpus_evenly_and_refuse_more_workers_than_cpus(monkeypatch):
    from agile.errors import ConfigError
    from agile.paper import pool

    assert pool.cpu_groups(2, [0, 1]) == [[0], [1]]
    assert pool.cpu_groups(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert pool.cpu_groups(1, [3, 5]) == [[3, 5]]
    with pytest.raises(ConfigError, match=r"--workers must be between 1 and the 2 CPUs this "
                                          r"process may use, got 3"):
        pool.cpu_groups(3, [0, 1])
    with pytest.raises(ConfigError, match=r"got 0"):
        pool.cpu_groups(0, [0, 1])
    monkeypatch.setenv("NPROC", "7")
    assert pool.xla_threads() == 7  # what a worker's NPROC is set to, whatever its CPUs
    monkeypatch.delenv("NPROC")
    assert pool.xla_threads() == len(pool.available_cpus())


def _sweep_command(workdir, *args, workers=2):
    return [
        sys.executable, "scripts/sweep.py", f"--workdir={workdir}", "--seeds=2",
        "--combos=7,12,11", f"--workers={workers}", "--config.num_epochs=2",
        "--config.batch_size=50", "--config.data.train_size=200", "--config.data.val_size=100",
        "--config.data.test_size=100", "--config.checkpoint_every_steps=2", *args,
    ]


def _sweep(workdir, data_dir, *args, workers=2):
    command = _sweep_command(workdir, *args, workers=workers)
    return subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "MNIST_DIR": data_dir},
                          capture_output=True, text=True, timeout=600)


def _faults_env(data_dir, faults: str) -> dict:
    """The environment of a sweep whose trials run tests/paper/trial_faults.py's ``faults``."""
    path = os.pathsep.join([str(REPO_ROOT / "tests" / "paper"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "MNIST_DIR": data_dir, "TRIAL_FAULTS": faults, "PYTHONPATH": path}


def _wait_for_markers(process, folders, guard_s=600):
    """Waits until each trial folder has trial_faults' marker (its trial is held at its step:
    a state the sweep cannot pass), failing at once if the sweep ends first. ``guard_s`` only
    bounds a hang; no outcome depends on it."""
    import time

    from trial_faults import MARKER

    guard = time.monotonic() + guard_s
    while not all((folder / MARKER).exists() for folder in folders):
        if process.poll() is not None:
            pytest.fail("the sweep ended before its trials reached the held step: "
                        + process.communicate()[1][-3000:])
        assert time.monotonic() < guard, "the held step was never reached"
        time.sleep(0.1)


@pytest.mark.slow
def test_parallel_workers_give_the_one_at_a_time_results_and_report_a_failed_trial(
        tmp_path, synthetic_mnist_dir):
    """Two worker processes, each pinned to a CPU and serving trial after trial: every trial's
    rows are bit-identical to one-at-a-time training in one process. A trial that cannot run
    (its workdir locked by another process) is one line at the end, the others finish (its
    worker serves on), and the rerun completes it."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    from agile.paper.workdir import Lock

    data = str(synthetic_mnist_dir)
    one = _sweep(tmp_path / "one", data, workers=1)
    assert one.returncode == 0, one.stderr[-3000:]
    (tmp_path / "two" / "combo_11").mkdir(parents=True)
    with Lock(tmp_path / "two" / "combo_11"):
        two = _sweep(tmp_path / "two", data)
    assert two.returncode == 2, two.stderr[-3000:]
    assert re.search(r"error: 1 of 3 trials did not finish \(combo_11: Workdir .*combo_11 is in "
                     r"use by process \d+", two.stderr)
    assert "combo_07 started on CPU" in two.stderr and "combo_12 started on CPU" in two.stderr
    workers = re.findall(r"started on CPU \d \(worker (\d+);", two.stderr)
    assert len(workers) == 3 and len(set(workers)) == 2  # 3 trials, 2 processes started once
    again = _sweep(tmp_path / "two", data)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("already finished; skipping") == 2
    for trial in ("combo_07", "combo_11", "combo_12"):
        assert (tmp_path / "two" / trial / "metrics.jsonl").read_text() == (
            tmp_path / "one" / trial / "metrics.jsonl").read_text(), trial
    columns = [c for c in trials_lib.CSV_FIELDS if c != "wall_time_s"]
    rows = [[{c: row[c] for c in columns} for row in csv.DictReader((tmp_path / d / "results.csv")
                                                                     .open())]
            for d in ("one", "two")]
    assert rows[0] == rows[1] and len(rows[0]) == 6


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_the_rerun_resumes_them(tmp_path, synthetic_mnist_dir):
    """Ctrl-C to a sweep of two workers: one line, status 130, no worker left running; the
    same command then resumes the trials from their checkpoints to the uninterrupted rows."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    import signal

    data = str(synthetic_mnist_dir)
    reference = _sweep(tmp_path / "reference", data, "--config.num_epochs=4", workers=1)
    assert reference.returncode == 0, reference.stderr[-3000:]
    command = _sweep_command(tmp_path / 'run', "--config.num_epochs=4")
    # Both workers' trials are held after step 6 (checkpoints at 2, 4, 6) until stopped, so the
    # Ctrl-C lands mid-sweep however fast or slow the machine (it raced before, #28).
    sweep_process = subprocess.Popen(
        [*command, "--trial_hook=trial_faults:inject"], cwd=REPO_ROOT,
        env=_faults_env(data, "combo_07@6:hold,combo_12@6:hold"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_markers(sweep_process, [tmp_path / "run" / "combo_07", tmp_path / "run" / "combo_12"])
    sweep_process.send_signal(signal.SIGINT)
    _, stderr = sweep_process.communicate(timeout=900)  # bounds a hang only (load: >300 s once)
    assert sweep_process.returncode == 130, stderr[-3000:]
    assert stderr.rstrip().endswith(
        "Interrupted. Rerun the same command to resume from the last checkpoint.")
    left = subprocess.run(["pgrep", "-f", "agile.paper.pool"], capture_output=True, text=True)
    assert str(tmp_path) not in left.stdout
    again = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "MNIST_DIR": data},
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for trial in ("combo_07", "combo_11", "combo_12"):
        assert (tmp_path / "run" / trial / "metrics.jsonl").read_text() == (
            tmp_path / "reference" / trial / "metrics.jsonl").read_text(), trial


@pytest.mark.slow
def test_a_killed_worker_fails_its_trial_only_and_a_fresh_worker_takes_the_next(
        tmp_path, synthetic_mnist_dir):
    """kill -9 of one worker mid-trial: that trial is one line at the end (its exit status), a
    fresh worker on the same CPU trains the trial still waiting, and the rerun resumes the
    killed one from its checkpoint to the one-at-a-time rows."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 CPUs")
    import signal

    data = str(synthetic_mnist_dir)
    reference = _sweep(tmp_path / "reference", data, "--config.num_epochs=4", workers=1)
    assert reference.returncode == 0, reference.stderr[-3000:]
    run = tmp_path / "run"
    command = _sweep_command(run, "--config.num_epochs=4")
    # combo_07 and combo_12 are held after step 6, so combo_11 still waits for a worker when
    # combo_07's is killed; then combo_12 is released.
    sweep_process = subprocess.Popen(
        [*command, "--trial_hook=trial_faults:inject"], cwd=REPO_ROOT,
        env=_faults_env(data, "combo_07@6:hold,combo_12@6:hold"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_markers(sweep_process, [run / "combo_07", run / "combo_12"])
    workers = subprocess.run(["pgrep", "-f", f"agile.paper.pool --serve {run}"],
                             capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    # A worker's stdout is its trial's log while it trains the trial.
    victim = next(pid for pid in workers
                  if os.readlink(f"/proc/{pid}/fd/1") == str(run / "combo_07" / "worker.log"))
    os.kill(int(victim), signal.SIGKILL)
    from trial_faults import RELEASE

    (run / "combo_12" / RELEASE).touch()
    _, stderr = sweep_process.communicate(timeout=600)
    assert sweep_process.returncode == 2, stderr[-3000:]
    assert re.search(r"error: 1 of 3 trials did not finish \(combo_07: exit status -9; see "
                     r".*combo_07/worker\.log\)", stderr), stderr[-3000:]
    started = re.findall(r"(combo_\d+) started on CPU \d \(worker (\d+);", stderr)
    assert len({pid for _, pid in started}) == 3  # the two first workers and the fresh one
    assert (run / "combo_11" / "summary.json").exists() and (run / "combo_12" / "summary.json"
                                                             ).exists()
    again = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "MNIST_DIR": data},
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for trial in ("combo_07", "combo_11", "combo_12"):
        assert (run / trial / "metrics.jsonl").read_text() == (
            tmp_path / "reference" / trial / "metrics.jsonl").read_text(), trial


def test_user_error_message_gives_one_line_for_user_errors_and_none_for_bugs():
    """What cli.run and a sweep's worker report for a trial: a UserError's text, a full or
    read-only disk's path and errno; None (a bug, whose traceback is kept) for anything else."""
    import errno

    from agile.errors import ConfigError
    from agile.paper import cli

    assert cli.user_error_message(ConfigError("bad field")) == "bad field"
    full = OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.jsonl")
    assert cli.user_error_message(full) == (
        "Cannot write /runs/x/metrics.jsonl: [Errno 28] No space left on device.")
    assert cli.user_error_message(OSError(errno.EBADF, "Bad file descriptor")) is None
    assert cli.user_error_message(ValueError("a bug")) is None
