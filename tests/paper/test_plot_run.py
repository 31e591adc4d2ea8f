"""scripts/plot_run.py: draws a run's checkpoint, and says what is wrong in one line.

The runs here are tiny checkpoints of the paper's CNN (one conv layer of 3 channels, a dense
layer of 5 units) written by ``agile.paper.workdir.Checkpoints`` in the layout
``agile.paper.train`` writes, so every case spawns only the plotting script.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from agile_testing import REPO_ROOT

from agile.paper import config as config_lib
from agile.paper import tasks
from agile.paper import workdir as workdir_lib

pytestmark = pytest.mark.slow  # every test spawns the script
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ABSL_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d")  # absl's own log lines (orbax's warnings)


def write_run(workdir, *, conv="agile_relu", dense="agile_tanh", granularity="element",
              seeds=1, steps=(7,)):
    """A tiny run's ``config.json`` and checkpoints at ``steps``, as train.py writes them.

    Each seed's parameters are those of ``model.init`` with a and b moved off their initial
    values; a seed batch (``seeds > 1``) stacks them along a leading axis in the state.
    """
    config = config_lib.get_config()
    config.model.update(conv_activation=conv, dense_activation=dense, granularity=granularity,
                        conv_features=[3], dense_features=5)
    config.num_seeds = seeds
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / workdir_lib.CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    model = tasks.create_model(config)
    example = jnp.zeros((1, 28, 28, 1), jnp.float32)
    rng = np.random.default_rng(0)

    def moved(path, leaf):
        leaf = np.asarray(leaf)
        if path[-1].key in ("a", "b"):
            return (leaf + 0.2 * rng.normal(size=leaf.shape)).astype(np.float32)
        return leaf

    per_seed = [
        jax.tree_util.tree_map_with_path(moved, model.init(jax.random.key(s), example)["params"])
        for s in range(seeds)
    ]
    state = per_seed[0] if seeds == 1 else jax.tree.map(lambda *s: np.stack(s), *per_seed)
    checkpoints = workdir_lib.Checkpoints(workdir)
    for step in steps:
        arrays = {"state": {"params": state}, "accum": {}, "best_params": per_seed}
        checkpoints.save(step, arrays, {"format": 2, "histories": [{}] * seeds})
    checkpoints.close()
    return workdir


def plot_run(*args, timeout=300):
    return subprocess.run([sys.executable, "scripts/plot_run.py", *map(str, args)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def assert_one_error_line(result, expected):
    """rc 2; stderr is one ``error:`` line matching ``expected`` (a regex), nothing else but
    absl log lines: no traceback, no usage text."""
    assert result.returncode == 2, result.stderr[-3000:]
    others = [line for line in result.stderr.splitlines() if not ABSL_LOG_LINE.match(line)]
    assert len(others) == 1, result.stderr[-3000:]
    assert re.fullmatch(f"error: {expected}", others[0]), others[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The runs the cases use, written once per test process."""
    root = tmp_path_factory.mktemp("runs")
    sweep = root / "sweep"
    write_run(sweep / "combo_12")
    write_run(sweep / "combo_11", dense="agile_relu")
    (sweep / "sweep.json").write_text("{}")
    killed = root / "killed"
    killed.mkdir()
    shutil.copy(sweep / "combo_12" / workdir_lib.CONFIG_FILE, killed)
    (killed / workdir_lib.CHECKPOINT_DIR).mkdir()
    (root / "empty").mkdir()
    (root / "a_file").write_text("")
    return {
        "root": root,
        "element": write_run(root / "element", steps=(5, 7)),
        "channel": write_run(root / "channel", granularity="channel"),
        "seeds": write_run(root / "seeds", seeds=2),
        "plain": write_run(root / "plain", conv="relu", dense="relu"),
        "sweep": sweep,
        "killed": killed,
    }


CASES = {
    "166_missing_folder": (
        lambda r: [f"--workdir={r['root'] / 'missing'}"],
        r"Workdir \S+/missing does not exist\."),
    "165_empty_folder": (
        lambda r: [f"--workdir={r['root'] / 'empty'}"],
        r"\S+/empty is not a training run's folder: it has no config\.json\."),
    "169_sweep_folder": (
        lambda r: [f"--workdir={r['sweep']}"],
        r"\S+/sweep is a sweep's folder \(2 runs in it\): pass one run as --workdir, e\.g\. "
        r"--workdir=\S+/sweep/combo_11\."),
    "170_seed_index_out_of_range": (
        lambda r: [f"--workdir={r['seeds']}", "--seed_index=5"],
        r"\S+/seeds trained 2 seeds: seed index 5 is out of range \(0 \.\. 1\)\."),
    "171_unknown_maps_layer": (
        lambda r: [f"--workdir={r['element']}", "--maps=nonexistent"],
        r"--maps: no agile layer 'nonexistent' in this run; its agile layers: conv_act_0, "
        r"hidden_act\."),
    "172_maps_of_a_dense_layer": (
        lambda r: [f"--workdir={r['element']}", "--maps=hidden_act"],
        r"--maps: hidden_act's a and b have shape \(5,\) \(one per unit\), not one per element "
        r"of a feature map \(H, W, C\); layers with maps: conv_act_0\. The activations figure "
        r"draws hidden_act's a and b\."),
    "172_maps_of_a_per_channel_layer": (
        lambda r: [f"--workdir={r['channel']}", "--maps=conv_act_0"],
        r"--maps: conv_act_0's a and b have shape \(3,\) \(one per channel\), not one per "
        r"element of a feature map \(H, W, C\); this run has no maps\. The activations figure "
        r"draws conv_act_0's a and b\."),
    "167_killed_before_its_first_checkpoint": (
        lambda r: [f"--workdir={r['killed']}"],
        r"\S+/killed has no checkpoint yet: the run stopped \(or is still running\) before its "
        r"first one \(it saves every 500 steps and at its end\); nothing to plot\."),
    "168_no_agile_layers": (
        lambda r: [f"--workdir={r['plain']}"],
        r"\S+/plain trained no agile layers \(conv_activation='relu', "
        r"dense_activation='relu'\): there is nothing to plot\."),
    "124_uncreatable_output_dir": (
        lambda r: [f"--workdir={r['element']}", f"--output_dir={r['root'] / 'a_file' / 'x'}"],
        r"Cannot create --output_dir \S+/a_file/x: Not a directory\."),
    "unknown_format": (
        lambda r: [f"--workdir={r['element']}", "--format=jpg"],
        r"flag --format=jpg: value should be one of <png\|pdf\|svg>"),
    "unexpected_argument": (
        lambda r: [f"--workdir={r['element']}", "extra"],
        r"Unexpected arguments: extra"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_user_error_is_one_line_and_exit_status_2(runs, case, tmp_path):
    args, expected = CASES[case]
    result = plot_run(f"--output_dir={tmp_path / 'figures'}", *args(runs))  # the last one wins
    assert_one_error_line(result, expected)
    assert not (tmp_path / "figures").exists()  # refused before anything was written


def _unwritable_folder(tmp_path):
    """A folder this process cannot write into: a read-only one, or /sys/kernel for root
    (whom file modes do not stop)."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys/kernel")):
        probe = candidate / "probe.png"
        try:
            probe.open("wb").close()
        except OSError:
            return candidate
        probe.unlink()
    pytest.skip("no folder here refuses this process's writes")


def test_124_an_output_dir_that_cannot_be_written_is_one_line(runs, tmp_path):
    folder = _unwritable_folder(tmp_path)
    result = plot_run(f"--workdir={runs['element']}", f"--output_dir={folder}")
    assert_one_error_line(
        result,
        rf"Cannot write element_activations\.png in --output_dir {re.escape(str(folder))}: "
        r"(Permission denied|Read-only file system)\.",
    )


def test_173_a_damaged_latest_checkpoint_falls_back_to_the_earlier_one(runs, tmp_path):
    workdir = tmp_path / "damaged"
    shutil.copytree(runs["element"], workdir)
    shutil.rmtree(workdir / "checkpoints" / "7" / "arrays")
    result = plot_run(f"--workdir={workdir}", f"--output_dir={tmp_path / 'out'}", "--dpi=30")
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith(f"{workdir}: step 5, best parameters of seed index 0 of 1")
    assert "Checkpoint" in result.stderr and "trying an earlier one" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "damaged_activations.png", "damaged_maps_conv_act_0.png"]


def test_a_per_channel_run_gives_its_activations_only_as_pdf(runs, tmp_path):
    out = tmp_path / "out"
    result = plot_run(f"--workdir={runs['channel']}", f"--output_dir={out}", "--format=pdf",
                      "--name=ch", "--columns=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.name for p in out.iterdir()] == ["ch_activations.pdf"]  # no maps per channel
    assert (out / "ch_activations.pdf").read_bytes().startswith(b"%PDF")
    assert "agile layers: conv_act_0, hidden_act" in result.stdout


@pytest.mark.parametrize("seed_index, shown", [(1, 1), (-1, 1), (0, 0)])
def test_seed_index_picks_a_seed_of_a_seed_batch(runs, tmp_path, seed_index, shown):
    out = tmp_path / "out"
    result = plot_run(f"--workdir={runs['seeds']}", f"--output_dir={out}", "--params=last",
                      f"--seed_index={seed_index}", "--format=svg", "--maps=conv_act_0")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"last parameters of seed index {shown} of 2" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "seeds_activations.svg", "seeds_maps_conv_act_0.svg"]
    assert (out / "seeds_activations.svg").read_text().startswith("<?xml")


def test_plot_run_script_draws_a_workdirs_latest_checkpoint(tmp_path):
    """scripts/plot_run.py on a checkpoint written the way agile.paper.train writes one (moved here
    from tests/library/test_plotting.py: it needs the study's code)."""
    write_run(tmp_path)  # a paper CNN: a per-element conv layer, a dense layer
    out = tmp_path / "figures"
    subprocess.run(
        [
            sys.executable,
            "scripts/plot_run.py",
            f"--workdir={tmp_path}",
            f"--output_dir={out}",
            "--name=run",
            "--dpi=30",
        ],
        cwd=REPO_ROOT,
        check=True,
        timeout=300,
        capture_output=True,
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "run_activations.png",
        "run_maps_conv_act_0.png",
    ]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in out.iterdir())
