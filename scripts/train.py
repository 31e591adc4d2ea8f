"""Trains the paper's CNN on one configuration.

    python scripts/train.py --config=configs/combo_12.py [--workdir=DIR] [--config.num_epochs=3]

Without --workdir, results go to a new folder runs/<combo>_<time>/.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from agile import train
from agile.combos import combo_number

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (default: runs/<combo>_<time>).")
flags.mark_flags_as_required(["config"])


def default_workdir(config) -> Path:
    """runs/combo_NN_<time>, or runs/<conv>-<dense>_<time> outside Table 1."""
    conv, dense = config.model.conv_activation, config.model.dense_activation
    combo = combo_number(conv, dense)
    name = f"combo_{combo:02d}" if combo else f"{conv}-{dense}"
    return Path("runs") / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = _CONFIG.value
    train.validate_config(config)
    workdir = Path(_WORKDIR.value) if _WORKDIR.value else default_workdir(config)
    logging.info("Writing results to %s", workdir)
    summary = train.train_and_evaluate(config, workdir)
    print(json.dumps(summary, indent=2))
    print(f"Results are in {workdir.resolve()}")


if __name__ == "__main__":
    app.run(main)
