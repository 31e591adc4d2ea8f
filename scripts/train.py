"""Trains the paper's CNN on one configuration.

    python scripts/train.py --config=configs/combo_12.py [--workdir=DIR] [--config.num_epochs=3]

Without --workdir, results go to a new folder runs/<combo>_<time>/. Several processes
(``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``, or the settings
``jax.distributed.initialize`` detects itself) need the same --workdir on a shared filesystem.
"""

from __future__ import annotations

import json
import socket
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
_COORDINATOR_WAIT = flags.DEFINE_float(
    "coordinator_wait_s", 60.0, "Multi-process: how long a process other than 0 waits for "
    "process 0's service at --coordinator_address to answer before it gives up.")
flags.mark_flags_as_required(["config"])


def default_workdir(config) -> Path:
    """runs/combo_NN_<time>, or runs/<conv>-<dense>_<time> outside Table 1."""
    name = trial_name(config.model.conv_activation, config.model.dense_activation)
    return Path("runs") / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"


def wait_for_coordinator(address: str | None, process_id: int | None, wait_s: float) -> None:
    """One line, within ``wait_s``, when nothing answers at ``address`` for a process other than
    0 (JAX would wait 5 minutes, then abort with a C++ stack trace); process 0 serves there."""
    if not address or not process_id:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        cli.fail(f"--coordinator_address takes host:port, got {address!r}.")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=2.0).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                cli.fail(f"Nothing answers at --coordinator_address={address} "
                         f"({err.strerror or type(err).__name__}) after {wait_s:g} s: start "
                         "process 0 (--process_id=0) on that host first, or check the host and "
                         "port (--coordinator_wait_s waits longer).")
            time.sleep(0.5)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        cli.fail(f"Unexpected arguments: {' '.join(argv[1:])}")
    wait_for_coordinator(_COORDINATOR.value, _PROCESS_ID.value, _COORDINATOR_WAIT.value)
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
__doc__ += cli.config_fields_help(*config_lib.FIELD_SOURCES)


if __name__ == "__main__":
    cli.run(main)
