"""Trains the paper's CNN on one configuration.

    python scripts/train.py --config=configs/combo_12.py [--workdir=DIR] [--config.num_epochs=3]

Without --workdir, results go to a new folder runs/<combo>_<time>/. Several processes
(``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``, or the settings
``jax.distributed.initialize`` detects itself) need the same --workdir on a shared filesystem.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
from absl import flags, logging

from agile.paper import cli, parallel, train
from agile.paper import config as config_lib
from agile.paper.trials import trial_name

_CONFIG = cli.define_config_file("config", None, "Path to a config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<combo>_<time>).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "Multi-process: host:port of process 0 (jax.distributed)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process, 0-based.")
flags.mark_flags_as_required(["config"])


def default_workdir(config) -> Path:
    """runs/combo_NN_<time>, or runs/<conv>-<dense>_<time> outside Table 1."""
    name = trial_name(config.model.conv_activation, config.model.dense_activation)
    return Path("runs") / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"Unexpected arguments: {' '.join(argv[1:])}")
    parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    config = _CONFIG.value
    config_lib.validate(config)
    if jax.process_count() > 1 and not _WORKDIR.value:
        cli.fail("Several processes need one shared --workdir.")
    workdir = Path(_WORKDIR.value) if _WORKDIR.value else default_workdir(config)
    logging.info("Writing results to %s", workdir)
    summary = train.train_and_evaluate(config, workdir)
    print(json.dumps(summary, indent=2))
    print(f"Results are in {workdir.resolve()}")


flags.adopt_module_key_flags(cli)  # --config and the compilation cache in --help
__doc__ += cli.config_fields_help(config_lib.get_config)


if __name__ == "__main__":
    cli.run(main)
