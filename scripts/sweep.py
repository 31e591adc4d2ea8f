"""Runs Table 1's combinations with several seeds each (each combination's seeds in one program).

    python scripts/sweep.py --workdir=runs/sweep --seeds=8 [--combos=1,5,12]
        [--config=configs/default.py] [--config.num_epochs=50 ...]
    python scripts/sweep.py --workdir=runs/resnet --seeds=4 --config=configs/resnet.py
        --activations=relu,agile_relu,prelu

(a model with one activation, the ResNet or the transformer, sweeps --activations instead).

Each combination trains in DIR/combo_NN, --workers at a time (default: one per CPU, each
worker pinned to its own; --workers=1: one after another in this process; the numbers are the
same either way), resumable: an interrupted sweep continues where it stopped, finished
combinations are skipped. DIR/sweep.json records the settings; a rerun with
other settings is refused. DIR/results.csv has one row per combination and seed, DIR/results.md
the mean ± std and 95% confidence interval per combination, over every finished combination.

    python scripts/sweep.py --backend=ray --workdir=runs/sweep --seeds=8 [--cpus_per_trial=1]
        [--gpus_per_trial=0.5] [--max_concurrent=0] [--ray_address=auto|host:port]

runs each combination as a Ray Tune trial (agile/paper/ray_sweep.py) on a local Ray started for the
run, or on an existing Ray cluster: same folders, tables and numbers.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from agile.paper import cli, pool, ray_sweep, sweep
from agile.paper import config as config_lib
from agile.paper import trials as trials_lib
from agile.paper.combos import COMBOS
from agile.paper.workdir import check_path

_CONFIG = cli.define_config_file(
    "config", str(Path(__file__).resolve().parents[1] / "configs" / "default.py"),
    "Base config (default: this repository's configs/default.py); each combination sets "
    "its activations.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep folder (one sub-folder per combination).")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds per combination (config.seed onwards).")
_COMBOS = flags.DEFINE_list("combos", [str(c) for c in COMBOS],
                            "Table 1 rows to run (the paper CNN's configs).")
_ACTIVATIONS = flags.DEFINE_list(
    "activations", None, "Activations to run, one trial each, for a model with one activation "
    "(configs/resnet.py, configs/transformer.py); default: the config's.")
_BACKEND = flags.DEFINE_enum(
    "backend", "in_process", ["in_process", "ray"],
    "in_process: trials on this machine, --workers at a time; ray: Ray Tune trials.")
_WORKERS = flags.DEFINE_integer(
    "workers", None, "--backend=in_process: trials trained at once, each in a process pinned "
    "to its own CPUs (default: one per CPU this process may use; 1: one after another in this "
    "process). Results are the same bit for bit.")
_CPUS = flags.DEFINE_float("cpus_per_trial", 1.0, "--backend=ray: CPUs reserved per trial.")
_GPUS = flags.DEFINE_float(
    "gpus_per_trial", 0.0, "--backend=ray: GPUs per trial; a fraction shares a GPU (0: CPU).")
_MAX_CONCURRENT = flags.DEFINE_integer(
    "max_concurrent", 0, "--backend=ray: most trials at once (0: as the resources allow).")
_RAY_ADDRESS = flags.DEFINE_string(
    "ray_address", None, "--backend=ray: 'auto' or host:port of a running Ray cluster "
    "(unset: a local Ray started for this run).")
_MAX_FAILURES = flags.DEFINE_integer(
    "max_failures", 3, "--backend=ray: retries of a failed trial (it resumes from its "
    "checkpoint).")
_TRIAL_HOOK = flags.DEFINE_string(
    "trial_hook", None, "module:function called in each trial's process with an "
    "agile.paper.trials.TrialContext; returns an after_step(step) callable or None (used "
    "for fault injection in the tests; monitoring is another use).")
RAY_FLAGS = ("cpus_per_trial", "gpus_per_trial", "max_concurrent", "ray_address", "max_failures")
flags.mark_flags_as_required(["workdir"])


def ray_options() -> ray_sweep.Options:
    """The Ray backend's options from the flags; one line if they are wrong or Ray is missing."""
    options = ray_sweep.Options(
        cpus_per_trial=_CPUS.value, gpus_per_trial=_GPUS.value,
        max_concurrent=_MAX_CONCURRENT.value, address=_RAY_ADDRESS.value,
        max_failures=_MAX_FAILURES.value, trial_hook=_TRIAL_HOOK.value)
    options.validate()
    ray_sweep.require_ray()
    return options


def _trials(base) -> list[trials_lib.Trial]:
    """The paper CNN's Table 1 rows (--combos), or a one-activation model's --activations."""
    if "conv_activation" in base.model:
        if _ACTIVATIONS.present:
            cli.fail("--activations applies to models with one activation (configs/resnet.py, "
                     "configs/transformer.py); the paper CNN's sweep takes --combos.")
        combos = trials_lib.parse_combos(_COMBOS.value)
        return trials_lib.trials_for_pairs(base, [COMBOS[c] for c in combos], _SEEDS.value)
    if _COMBOS.present:
        cli.fail(f"--combos are the paper CNN's Table 1 rows; a {base.model.name} sweep takes "
                 "--activations.")
    return trials_lib.trials_for_activations(base, _ACTIVATIONS.value or [base.model.activation],
                                             _SEEDS.value)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"Unexpected arguments: {' '.join(argv[1:])}")
    given = [name for name in RAY_FLAGS if flags.FLAGS[name].present]
    if _BACKEND.value != "ray" and given:
        cli.fail(f"--{given[0]} applies to --backend=ray only.")
    options = ray_options() if _BACKEND.value == "ray" else None
    if options is not None and _WORKERS.present:
        cli.fail("--workers applies to --backend=in_process only (Ray: --max_concurrent).")
    if _TRIAL_HOOK.value:
        trials_lib.hook_function(_TRIAL_HOOK.value)  # importable here, so in the workers too
    workers = pool.default_workers() if _WORKERS.value is None else _WORKERS.value
    pool.cpu_groups(workers)  # one line now if the machine cannot run that many
    if _SEEDS.value < 1:
        cli.fail(f"--seeds must be a positive integer, got {_SEEDS.value}.")
    base = _CONFIG.value.copy_and_resolve_references()
    trials = _trials(base)
    for trial in trials:
        config_lib.validate(trial.config)
    workdir, sweep_settings = Path(_WORKDIR.value), trials_lib.settings(base, _SEEDS.value)
    for trial in trials:  # every trial's folder can hold checkpoints
        check_path(workdir / trial.name)
    sweep.check_folder(workdir, sweep_settings)  # nothing is written before all is checked

    def claim() -> None:
        sweep.claim_folder(workdir, sweep_settings)

    if options is None:
        claim()
        sweep.run_trials(workdir, trials, workers, _TRIAL_HOOK.value)
    else:  # claimed once Ray runs and has the resources a trial asks for
        ray_sweep.run(workdir, trials, options, claim)
    sweep.write_tables(workdir)
    print((workdir / sweep.RESULTS_MD).read_text())
    print(f"Results are in {workdir.resolve()}")


flags.adopt_module_key_flags(cli)  # --config and the compilation cache in --help
__doc__ += cli.config_fields_help(*config_lib.FIELD_SOURCES)


if __name__ == "__main__":
    cli.run(main)
