"""Runs Table 1's combinations with several seeds each (each combination's seeds in one program).

    python scripts/sweep.py --workdir=runs/sweep --seeds=8 [--combos=1,5,12]
        [--config=configs/default.py] [--config.num_epochs=50 ...]

Each combination trains in DIR/combo_NN (resumable: an interrupted sweep continues where it
stopped, finished combinations are skipped). DIR/sweep.json records the settings; a rerun with
other settings is refused. DIR/results.csv has one row per combination and seed, DIR/results.md
the mean ± std and 95% confidence interval per combination, over every finished combination.
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import flags, logging
from ml_collections import config_flags

from agile import cli, sweep, train
from agile import config as config_lib
from agile.combos import COMBOS
from agile.workdir import prepare

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/default.py", "Base config; each combination sets its activations."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep folder (one sub-folder per combination).")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds per combination (config.seed onwards).")
_COMBOS = flags.DEFINE_list("combos", [str(c) for c in COMBOS], "Table 1 rows to run.")
flags.mark_flags_as_required(["workdir"])


def run_in_process(workdir: Path, trials: list[sweep.Trial]) -> None:
    """Trains the unfinished trials one after another, rewriting the tables after each."""
    started, trained = time.perf_counter(), 0
    for position, trial in enumerate(trials, start=1):
        if sweep.finished_summary(workdir, trial) is not None:
            logging.info("[%d/%d] %s already finished; skipping.", position, len(trials),
                         trial.name)
            continue
        left = len(trials) - position + 1
        eta = (time.perf_counter() - started) / trained * left if trained else None
        logging.info("[%d/%d] %s (%s / %s), %d seeds%s", position, len(trials), trial.name,
                     trial.config.model.conv_activation, trial.config.model.dense_activation,
                     trial.config.num_seeds, f", ~{eta:.0f} s left" if eta is not None else "")
        train.train_and_evaluate(trial.config, workdir / trial.name)
        trained += 1
        sweep.write_tables(workdir)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"Unexpected arguments: {' '.join(argv[1:])}")
    combos = sweep.parse_combos(_COMBOS.value)
    if _SEEDS.value < 1:
        cli.fail(f"--seeds must be a positive integer, got {_SEEDS.value}.")
    base = _CONFIG.value.copy_and_resolve_references()
    trials = sweep.trials_for_pairs(base, [COMBOS[c] for c in combos], _SEEDS.value)
    for trial in trials:
        config_lib.validate(trial.config)
    workdir = prepare(_WORKDIR.value)
    sweep.claim_folder(workdir, sweep.settings(base, _SEEDS.value))
    run_in_process(workdir, trials)
    sweep.write_tables(workdir)
    print((workdir / "results.md").read_text())
    print(f"Results are in {workdir.resolve()}")


if __name__ == "__main__":
    cli.run(main)
