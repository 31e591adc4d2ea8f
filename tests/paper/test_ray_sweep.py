"""The Ray Tune sweep backend (agile/paper/ray_sweep.py, scripts/sweep.py --backend=ray).

The Ray sweep of these tests trains 2 combinations (7, 12) x 2 seeds for 8 steps on the
synthetic MNIST of conftest.py, with a killed worker and a Ctrl-C on the way, and is compared
with the same sweep trained in this process (the in-process backend's loop): same files,
same numbers. Tests that start a process are slow; without Ray, those that need it skip.
"""

import csv
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from agile_testing import REPO_ROOT  # noqa: E402

from agile.paper import ray_sweep, sweep
from agile.paper.combos import COMBOS
from agile.paper.config import get_config
from agile.paper.trials import Trial, trials_for_pairs

SEEDS = 2
OVERRIDES = {"num_epochs": 2, "batch_size": 50, "checkpoint_every_steps": 2,
             "data.train_size": 200, "data.val_size": 0, "data.test_size": 100}
TIMING = ("wall_time_s", "steps_per_second", "time_breakdown_s")


def _base_config(data_dir: Path):
    """The config scripts/sweep.py builds from configs/default.py and OVERRIDES."""
    config = get_config()
    for field, value in OVERRIDES.items():
        parent, _, name = field.rpartition(".")
        setattr(config.data if parent else config, name, value)
    config.data.dir = str(data_dir)
    return config


def _trials(data_dir: Path) -> list[Trial]:
    return trials_for_pairs(_base_config(data_dir), [COMBOS[7], COMBOS[12]], SEEDS)


def _cli(workdir: Path, data_dir: Path, *args: str, combos: str = "7,12",
         env: dict | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    """scripts/sweep.py --backend=ray with this module's settings (and ``args``)."""
    command = [sys.executable, "scripts/sweep.py", f"--workdir={workdir}", f"--seeds={SEEDS}",
               f"--combos={combos}", "--backend=ray", *args,
               *(f"--config.{field}={value}" for field, value in OVERRIDES.items())]
    full_env = {**os.environ, "MNIST_DIR": str(data_dir), **(env or {})}
    return subprocess.run(command, cwd=REPO_ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def _without_timing(summary: dict) -> dict:
    """A summary less its timing, each seed's included (the only fields that may differ)."""
    kept = {k: v for k, v in summary.items() if k not in TIMING}
    if "seeds" in kept:
        kept["seeds"] = [_without_timing(seed) for seed in kept["seeds"]]
    return kept


def assert_same_results(folder: Path, reference: Path, trials=("combo_07", "combo_12")) -> None:
    """The trials' rows in metrics.jsonl bit for bit, and summaries and tables, timing aside."""
    for name in trials:
        assert (folder / name / "metrics.jsonl").read_text() == (
            reference / name / "metrics.jsonl").read_text(), name
        ours, theirs = (json.loads((f / name / "summary.json").read_text())
                        for f in (folder, reference))
        assert _without_timing(ours) == _without_timing(theirs), name

    def table_rows(f: Path) -> tuple[list, list]:
        rows = [{k: v for k, v in row.items() if k != "wall_time_s"}
                for row in csv.DictReader((f / "results.csv").open()) if row["trial"] in trials]
        lines = [line for line in (f / "results.md").read_text().splitlines()
                 if line.startswith(tuple(f"| {name} |" for name in trials))]
        return rows, lines

    ours, theirs = table_rows(folder), table_rows(reference)
    assert len(ours[0]) == SEEDS * len(trials) and len(ours[1]) == len(trials)
    assert ours == theirs


@pytest.fixture(scope="module")
def in_process_sweep(synthetic_mnist_dir, tmp_path_factory) -> Path:
    """The sweep trained by the in-process backend (sweep.run_trials), in this process."""
    folder = tmp_path_factory.mktemp("in_process")
    sweep.run_trials(folder, _trials(synthetic_mnist_dir))
    return folder


# ---------------------------------------------------------------------------------------------
# Without Ray.


def test_options_refuse_what_no_cluster_could_run():
    for options, message in [
        (ray_sweep.Options(cpus_per_trial=0), "--cpus_per_trial must be > 0"),
        (ray_sweep.Options(gpus_per_trial=-1), "--gpus_per_trial must be >= 0"),
        (ray_sweep.Options(gpus_per_trial=1.5), "above 1 must be a whole number"),
        (ray_sweep.Options(max_concurrent=-1), "--max_concurrent must be >= 0"),
        (ray_sweep.Options(max_failures=-1), "--max_failures must be >= 0"),
        (ray_sweep.Options(trial_hook="json"), "--trial_hook takes module:function, got 'json'"),
        (ray_sweep.Options(trial_hook="no_such_module:f"),
         r"--trial_hook=no_such_module:f cannot be loaded \(No module named 'no_such_module'\)"),
        (ray_sweep.Options(trial_hook="json:nope"), r"--trial_hook=json:nope cannot be loaded"),
    ]:
        with pytest.raises(ValueError, match=message):
            options.validate()
    ray_sweep.Options(cpus_per_trial=0.5, gpus_per_trial=0.25).validate()


def test_trial_hook_is_called_with_the_trial_context(tmp_path, monkeypatch):
    """``load_trial_hook`` imports module:function and returns what it makes of the context."""
    module = tmp_path / "my_hooks.py"
    module.write_text("def make(context):\n    return lambda step: (context.trial, step)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    context = ray_sweep.TrialContext("combo_07", tmp_path / "combo_07", ("combo_07",), tmp_path,
                                     123)
    assert ray_sweep.load_trial_hook("my_hooks:make", context)(5) == ("combo_07", 5)
    assert ray_sweep.load_trial_hook(None, context) is None


def test_missing_ray_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(sweep.SweepError, match=r"--backend=ray needs Ray Tune.*pip install") as err:
        ray_sweep.require_ray()
    assert "\n" not in str(err.value)


def test_tune_metrics_average_the_seeds_and_keep_each_seed():
    rows = [{"seed": seed, "step": 8, "epoch": 2.0, "train_loss": loss, "test_loss": loss + 1,
             "agile": {"conv_act_0/a": {"min": 1.0}}} for seed, loss in ((3, 1.0), (4, 2.0))]
    metrics = ray_sweep.tune_metrics(rows)
    assert metrics["step"] == 8 and metrics["train_loss"] == 1.5 and metrics["test_loss"] == 2.5
    assert metrics["seeds"] == {"3": {"step": 8, "epoch": 2.0, "train_loss": 1.0,
                                      "test_loss": 2.0},
                                "4": {"step": 8, "epoch": 2.0, "train_loss": 2.0,
                                      "test_loss": 3.0}}
    single = ray_sweep.tune_metrics([{"step": 4, "epoch": 1.0, "val_loss": 0.5, "agile": {}}])
    assert single == {"step": 4, "epoch": 1.0, "val_loss": 0.5}


def test_an_address_nothing_listens_on_is_one_line():
    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(sweep.SweepError, match=rf"Cannot reach the Ray cluster at "
                       rf"--ray_address=127.0.0.1:{port} \(127.0.0.1:{port}: Connection refused"):
        ray_sweep._check_reachable(f"127.0.0.1:{port}", f"127.0.0.1:{port}")
    with pytest.raises(ValueError, match="--ray_address must be 'auto' or host:port"):
        ray_sweep._host_port("head:port")
    assert ray_sweep._host_port("ray://head") == ("head", 10001)


def test_a_cluster_that_refuses_the_driver_is_one_line():
    refused = ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")
    refused.__cause__ = RuntimeError("Failed to connect to GCS. Last connection error: "
                                     "Unauthenticated: InvalidAuthToken: token is missing")
    assert ray_sweep._connect_error("auto", refused) == (
        "The Ray cluster at --ray_address=auto refused this driver's authentication token; set "
        "RAY_AUTH_MODE=token and make the cluster's token available here (~/.ray/auth_token, "
        "where `ray start --head` wrote it, or RAY_AUTH_TOKEN).")
    other = ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:80\nmore")
    assert ray_sweep._connect_error("10.0.0.1:80", other) == (
        "Cannot connect to a Ray cluster at --ray_address=10.0.0.1:80 (Failed to connect to Ray "
        "cluster at 10.0.0.1:80); give the head node's GCS address (`ray start --head` prints "
        "it; port 6379 by default).")


class _Cluster:
    """What check_resources reads from ``ray``: live nodes and the cluster's totals."""

    def __init__(self, *nodes: dict[str, float]):
        self._nodes = [{"Alive": True, "Resources": node} for node in nodes]
        self._nodes.append({"Alive": False, "Resources": {"CPU": 64.0, "GPU": 8.0}})  # dead

    def nodes(self):
        return self._nodes

    def cluster_resources(self):
        return {kind: sum(n["Resources"].get(kind, 0.0) for n in self._nodes if n["Alive"])
                for kind in ("CPU", "GPU")}


def test_more_gpus_or_cpus_per_trial_than_a_node_has_is_one_line():
    cpu_only = _Cluster({"CPU": 2.0})
    with pytest.raises(sweep.SweepError, match=r"^--gpus_per_trial=1 asks for more GPUs than "
                       r"the Ray cluster has on one node \(0; 0 in all\), so no trial could "
                       r"start. Use a smaller --gpus_per_trial \(fractions share a GPU\).$"):
        ray_sweep.check_resources(cpu_only, ray_sweep.Options(gpus_per_trial=1))
    two_nodes = _Cluster({"CPU": 8.0, "GPU": 2.0}, {"CPU": 8.0, "GPU": 2.0})
    with pytest.raises(sweep.SweepError, match=r"^--gpus_per_trial=3 .* on one node \(2; 4 in"):
        ray_sweep.check_resources(two_nodes, ray_sweep.Options(gpus_per_trial=3))
    with pytest.raises(sweep.SweepError, match=r"^--cpus_per_trial=4 asks for more CPUs"):
        ray_sweep.check_resources(cpu_only, ray_sweep.Options(cpus_per_trial=4))
    assert ray_sweep.check_resources(two_nodes, ray_sweep.Options(gpus_per_trial=0.5)) == {
        "CPU": 8.0, "GPU": 2.0}


# ---------------------------------------------------------------------------------------------
# The command line (a process each; those that need Ray skip without it).


@pytest.mark.slow
def test_cli_errors_are_one_line(tmp_path, synthetic_mnist_dir):
    shadow = tmp_path / "no_ray"
    (shadow / "ray").mkdir(parents=True)
    (shadow / "ray" / "__init__.py").write_text("raise ImportError(\"No module named 'ray'\")\n")
    missing = _cli(tmp_path / "a", synthetic_mnist_dir,
                   env={"PYTHONPATH": f"{shadow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "error: --backend=ray needs Ray Tune" in missing.stderr
    assert not (tmp_path / "a").exists()  # refused before the sweep folder was made
    in_process = _cli(tmp_path / "b", synthetic_mnist_dir, "--backend=in_process",
                      "--gpus_per_trial=1")
    assert in_process.returncode == 2
    assert "error: --gpus_per_trial applies to --backend=ray only." in in_process.stderr
    pytest.importorskip("ray")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = _cli(tmp_path / "c", synthetic_mnist_dir, f"--ray_address=127.0.0.1:{port}")
    assert unreachable.returncode == 2 and "Traceback" not in unreachable.stderr
    assert f"error: Cannot reach the Ray cluster at --ray_address=127.0.0.1:{port}" in (
        unreachable.stderr)
    assert not (tmp_path / "c").exists()  # N087: no sweep.json before the cluster answered
    # N086: the README's --gpus_per_trial=0.25 on a machine without GPUs left sweep.json, and
    # the next sweep in the folder was refused for "other settings"; now nothing is written.
    no_gpu = _cli(tmp_path / "d", synthetic_mnist_dir, "--gpus_per_trial=0.25")
    assert no_gpu.returncode == 2 and "Traceback" not in no_gpu.stderr
    assert "error: --gpus_per_trial=0.25 asks for more GPUs than the Ray cluster has" in (
        no_gpu.stderr)
    assert not (tmp_path / "d").exists()
    # N103: a RAY_TMPDIR too long for Ray's socket paths was a 35-line traceback after
    # sweep.json was written.
    long_tmp = _cli(tmp_path / "e", synthetic_mnist_dir,
                    env={"RAY_TMPDIR": str(tmp_path / ("t" * 120))})
    assert long_tmp.returncode == 2 and "Traceback" not in long_tmp.stderr
    assert "error: A local Ray keeps its sockets in" in long_tmp.stderr
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_ray_sweep_survives_a_killed_worker_and_ctrl_c_and_equals_in_process(
    tmp_path, synthetic_mnist_dir, in_process_sweep
):
    """Two trials at once on a local Ray. combo_07's worker process SIGKILLs itself after step
    7 (evaluation at 4; checkpoints at 2, 4, 6, saved in the background, so 4 at least is on
    disk): Tune retries it and it resumes from its checkpoint. Once combo_07 finished,
    combo_12 at step 5 sends Ctrl-C (SIGINT) to the driver. The same command then skips
    combo_07 and resumes combo_12. Every file equals the in-process sweep's, bit for bit
    (timing aside)."""
    pytest.importorskip("ray")
    folder = tmp_path / "sweep"
    fault = {"TRIAL_FAULTS": "combo_07@7:kill,combo_12@5:interrupt",
             "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests" / "paper"), os.environ.get(
                 "PYTHONPATH", "")])}
    first = _cli(folder, synthetic_mnist_dir, "--max_concurrent=2", "--max_failures=1",
                 "--trial_hook=trial_faults:inject", env=fault)
    assert first.returncode == 130, first.stderr[-3000:]  # Ctrl-C (#133)
    assert re.search(r"Ray Tune: 2 trials \(combo_07, combo_12\), 1 CPUs and 0 GPUs each, "
                     r"largest node \d+ CPUs and 0 GPUs", first.stderr)
    assert (folder / "combo_07" / ".fault_injected").read_text() == "kill after step 7\n"
    assert "combo_07 failed (1 so far); retrying" in first.stderr
    assert first.stderr.count("combo_07 step 4:") == 1  # not evaluated again after the retry
    assert first.stderr.count("combo_07 step 8:") == 1
    assert (folder / "combo_12" / ".fault_injected").read_text() == "interrupt after step 5\n"
    assert first.stderr.rstrip().endswith(
        "Interrupted. Rerun the same command to resume from the last checkpoint.")
    assert "Tuner.restore" not in first.stderr and "Stop signal received" not in first.stderr
    assert not (folder / "combo_12" / "summary.json").exists()
    assert "combo_12 step 4:" in first.stderr

    again = _cli(folder, synthetic_mnist_dir, "--max_concurrent=2", "--max_failures=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "combo_07 already finished; skipping" in again.stderr
    assert "Ray Tune: 1 trials (combo_12)" in again.stderr
    assert "combo_12 step 4:" not in again.stderr  # resumed after its evaluation at step 4
    assert "combo_12 step 8:" in again.stderr
    assert_same_results(folder, in_process_sweep)
    assert "| combo_12 | agile_relu / agile_sigmoid | 2 |" in again.stdout  # the table printed

    other = _cli(folder, synthetic_mnist_dir, "--config.seed=1")  # the settings guard
    assert other.returncode == 2 and "holds a sweep with other settings (seed)" in other.stderr


def test_tune_interrupt_notes_ctrl_c_and_drops_tunes_restore_advice():
    """#133: while Tune fits, its "Stop signal received" marks the sweep interrupted (the
    driver then exits like Ctrl-C, status 130) and its Tuner.restore advice is dropped.

    The records are read by a handler on Tune's own logger: once ray is imported (another test
    may have done so in this process), its loggers do not propagate to pytest's caplog."""
    import logging

    shown: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: shown.append(record.getMessage())
    logger = logging.getLogger("ray.tune.tune")
    logger.addHandler(handler)
    try:
        with ray_sweep._TuneInterrupt() as interrupt:
            logger.warning("Trial combo_12 errored.")
            assert not interrupt.received
            logger.warning("Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run.")
            logger.warning("Experiment has been interrupted.\nResume experiment with: "
                           "Tuner.restore(")
        assert interrupt.received
        assert shown == ["Trial combo_12 errored."]
        logger.warning("Resume experiment with: Tuner.restore(")  # outside a fit: shown
        assert shown[-1] == "Resume experiment with: Tuner.restore("
    finally:
        logger.removeHandler(handler)
