"""Runs Table 1's combinations with several seeds each (all seeds in one program).

    python scripts/sweep.py --workdir=runs/sweep --seeds=8 [--combos=1,5,12]
        [--config=configs/default.py] [--config.num_epochs=50 ...]

Each combination trains in DIR/combo_NN (resumable); a rerun skips combinations
whose summary.json exists. DIR/results.csv has one row per combination and seed,
DIR/results.md the mean ± std and 95% confidence interval per combination.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from agile import sweep, train
from agile.combos import COMBOS, combo_activations

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/default.py", "Base config; each combination sets its activations."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep folder (one sub-folder per combination).")
_SEEDS = flags.DEFINE_integer("seeds", 1, "Seeds per combination (config.seed onwards).")
_COMBOS = flags.DEFINE_list("combos", [str(c) for c in COMBOS], "Table 1 rows to run.")
flags.mark_flags_as_required(["workdir"])


def run_sweep(base_config, workdir: Path, combos: list[int], num_seeds: int) -> list[dict]:
    """Trains every combination not finished yet, rewriting the result tables after each."""
    rows: list[dict] = []
    started = time.perf_counter()
    trained = 0
    for position, combo in enumerate(combos, start=1):
        config = base_config.copy_and_resolve_references()
        config.model.conv_activation, config.model.dense_activation = combo_activations(combo)
        config.num_seeds = num_seeds
        combo_dir = workdir / f"combo_{combo:02d}"
        summary_path = combo_dir / "summary.json"
        if summary_path.exists():
            logging.info("[%d/%d] combo %d already finished; skipping.", position, len(combos),
                         combo)
            summary = json.loads(summary_path.read_text())
        else:
            remaining = len(combos) - position + 1
            eta = (time.perf_counter() - started) / trained * remaining if trained else None
            logging.info("[%d/%d] combo %d (%s / %s), %d seeds%s", position, len(combos), combo,
                         *combo_activations(combo), num_seeds,
                         f", ~{eta:.0f} s left for the sweep" if eta is not None else "")
            summary = train.train_and_evaluate(config, combo_dir)
            trained += 1
        rows.extend(sweep.csv_rows(summary))
        (workdir / "results.csv").write_text(sweep.write_csv(rows))
        (workdir / "results.md").write_text(sweep.results_markdown(rows))
    return rows


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    combos = [int(c) for c in _COMBOS.value]
    for combo in combos:
        combo_activations(combo)  # Fails for a row outside Table 1 before anything runs.
    config = _CONFIG.value.copy_and_resolve_references()
    config.num_seeds = _SEEDS.value
    train.validate_config(config)
    workdir = Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    run_sweep(config, workdir, combos, _SEEDS.value)
    print((workdir / "results.md").read_text())
    print(f"Results are in {workdir.resolve()}")


if __name__ == "__main__":
    app.run(main)
