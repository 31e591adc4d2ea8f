"""Folders a command is pointed at (#28): any path either works or is refused in one line before
anything is written; a run's folder and a sweep's folder are never mixed."""

import os
import subprocess
import sys

import pytest
from agile_testing import REPO_ROOT  # noqa: E402

from agile.paper import sweep, train
from agile.paper import trials as trials_lib
from agile.paper import workdir as workdir_lib
from agile.paper.config import get_config
from agile.paper.workdir import WorkdirError


def _tree(folder):
    """Every path under ``folder`` (to show nothing was written)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("name", ["run[1]", "sw [1]", "a*b", "what?"])
def test_a_glob_character_in_the_workdir_path_is_refused_before_anything_is_written(
        tmp_path, tiny_config, name, monkeypatch):
    """N066/N067: orbax merges a checkpoint's parts with a glob on its full path, so in
    ``run[1]`` every checkpoint was written without its arrays and no resume could read it.
    A run there (or under such a folder) is refused in one line and creates nothing."""
    for workdir in (tmp_path / name, tmp_path / name / "combo_12"):
        with pytest.raises(WorkdirError, match=(
                r"^The workdir's full path .* holds .*: orbax reads a checkpoint's path as a glob "
                r"pattern when it merges its parts, so the checkpoints would be written without "
                r"their arrays. Use a --workdir whose full path has none of \[ \* \?.$")) as err:
            train.train_and_evaluate(tiny_config, workdir)
        assert "\n" not in str(err.value)
        assert _tree(tmp_path) == []
    # A relative --workdir under a current folder with a glob character: its full path counts.
    (tmp_path / "x[2]").mkdir()
    monkeypatch.chdir(tmp_path / "x[2]")
    with pytest.raises(WorkdirError, match=r"full path .*x\[2\]/run holds \["):
        workdir_lib.prepare("run")
    assert _tree(tmp_path) == ["x[2]"]


@pytest.mark.slow  # starts both scripts (in-process: the glob test above)
def test_the_scripts_refuse_a_glob_path_in_one_line_and_create_nothing(tmp_path,
                                                                        synthetic_mnist_dir):
    """N066/N067 as the report ran them: train.py in ``run[1]``, sweep.py in ``sw [1]``."""
    env = {**os.environ, "MNIST_DIR": str(synthetic_mnist_dir)}
    small = ["--config.num_epochs=1", "--config.batch_size=50", "--config.data.train_size=200",
             "--config.data.val_size=100", "--config.data.test_size=100"]
    commands = [
        ["scripts/train.py", "--config=configs/combo_12.py", f"--workdir={tmp_path / 'run[1]'}"],
        ["scripts/sweep.py", f"--workdir={tmp_path / 'sw [1]'}", "--combos=7,12", "--seeds=2",
         "--workers=1"],
    ]
    for command in commands:
        result = subprocess.run([sys.executable, *command, *small], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 2, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("error: The workdir's full path ") and "holds [" in last
    assert _tree(tmp_path) == []


def test_a_folder_name_past_the_filesystem_limit_is_one_line(tmp_path):
    """N064: a 256-character folder name was a 29-line traceback (ENAMETOOLONG)."""
    with pytest.raises(WorkdirError, match=r"^The workdir .* has a folder name of 256 bytes "
                                           r"\(x{40}…\); this filesystem allows 255. Use shorter "
                                           r"names.$"):
        workdir_lib.prepare(tmp_path / ("x" * 256))
    assert _tree(tmp_path) == []


def test_a_path_too_long_for_the_checkpoint_files_is_refused_up_front(tmp_path):
    """N065: a workdir that fits the path limit while its checkpoint files do not trained, then
    died at the first save with a 134-line "Error reading" traceback and a folder no rerun
    could use. It is refused before anything is created, saying it is the path's length."""
    deep = tmp_path.joinpath(*["d" * 250] * 15, "e" * 240)  # about 4,000 characters
    with pytest.raises(WorkdirError, match=(
            r"^The workdir's full path is \d+ bytes long; its checkpoint files add up to 200, "
            r"past the 4096 bytes this filesystem allows in a path. Use a --workdir with a "
            r"shorter path.$")):
        workdir_lib.prepare(deep)
    assert _tree(tmp_path) == []
    fits = tmp_path.joinpath(*["d" * 200] * 5)
    assert workdir_lib.prepare(fits).is_dir()


@pytest.mark.slow
def test_train_refuses_a_sweep_folder_and_a_sweep_refuses_a_run_folder(tmp_path, tiny_config):
    """N095: train.py trained into a finished sweep's folder beside sweep.json; N096: sweep.py
    wrote a sweep into a run's folder. Each is refused in one line, the folder untouched."""
    sweep_dir = tmp_path / "sweep"
    settings = trials_lib.settings(get_config(), 2)
    sweep.claim_folder(sweep_dir, settings)
    before = _tree(sweep_dir)
    with pytest.raises(WorkdirError, match=(
            r"^.*/sweep is a sweep's folder \(it has sweep.json\): a run there would mix its "
            r"files with the sweep's. Give the run a folder of its own \(a new --workdir\), or "
            r"continue the sweep with scripts/sweep.py.$")):
        train.train_and_evaluate(tiny_config, sweep_dir)
    assert _tree(sweep_dir) == before
    run_dir = tmp_path / "run"
    tiny_config.num_epochs = 1
    train.train_and_evaluate(tiny_config, run_dir)
    before = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    with pytest.raises(sweep.SweepError, match=(
            r"^.*/run is a training run's folder \(it has config.json, checkpoints, "
            r"metrics.jsonl, summary.json\): a sweep there would mix its trials with the run's "
            r"files. Use a new --workdir for the sweep.$")):
        sweep.claim_folder(run_dir, settings)
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == before
    assert not (run_dir / "sweep.json").exists()


@pytest.mark.slow
def test_a_failed_ray_sweep_leaves_no_folder_behind(tmp_path, monkeypatch):
    """N086/N087/N103: a Ray sweep that cannot start (no GPU for --gpus_per_trial, no cluster,
    a RAY_TMPDIR too long for Ray's sockets) wrote sweep.json first, so the next sweep there
    was refused for "other settings" although nothing had trained. The folder is claimed only
    once Ray runs with the resources a trial needs."""
    from agile.paper import ray_sweep

    claimed = []
    trials = trials_lib.trials_for_pairs(get_config(), [("relu", "relu")], 1)
    workdir = tmp_path / "sweep"

    class CpuOnly:  # what check_resources reads of a one-node cluster without GPUs
        def nodes(self):
            return [{"Alive": True, "Resources": {"CPU": 2.0}}]

        def cluster_resources(self):
            return {"CPU": 2.0}

    monkeypatch.setattr(ray_sweep, "connect", lambda options: lambda: None)
    monkeypatch.setattr(ray_sweep, "require_ray", CpuOnly)
    with pytest.raises(sweep.SweepError, match=r"^--gpus_per_trial=0.25 asks for more GPUs"):
        ray_sweep.run(workdir, trials, ray_sweep.Options(gpus_per_trial=0.25),
                      lambda: claimed.append(True))
    assert not claimed and not workdir.exists()
    monkeypatch.undo()
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / ("t" * 120)))
    with pytest.raises(sweep.SweepError, match=(
            r"^A local Ray keeps its sockets in .*/ray/session_…/sockets/, \d+ bytes long, and a "
            r"socket path may have at most 107; set RAY_TMPDIR to a folder of at most \d+ "
            r"characters \(e.g. /tmp\).$")):
        ray_sweep.run(workdir, trials, ray_sweep.Options(), lambda: claimed.append(True))
    assert not claimed and not workdir.exists()


@pytest.mark.slow  # starts sweep.py (in-process: the path-length tests above)
def test_a_trial_folder_too_long_for_checkpoints_is_refused_before_the_sweep_is_claimed(
        tmp_path, synthetic_mnist_dir):
    """N065 in a sweep: the sweep folder fits, its trials' checkpoint files would not: one line
    before sweep.json is written."""
    fill = 4096 - workdir_lib.CHECKPOINT_PATH_RESERVE - 5 - len(str(tmp_path.resolve()))
    parts = ["d" * 250] * (fill // 251) + ["e" * (fill % 251 - 1)]
    deep = tmp_path.resolve().joinpath(*parts)  # fits, with 4 bytes to spare; combo_07/ does not
    workdir_lib.check_path(deep)
    env = {**os.environ, "MNIST_DIR": str(synthetic_mnist_dir)}
    result = subprocess.run(
        [sys.executable, "scripts/sweep.py", f"--workdir={deep}", "--combos=7", "--workers=1",
         "--config.num_epochs=1"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: The workdir's full path is ")
    assert _tree(tmp_path) == []
