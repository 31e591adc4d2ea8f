"""What a run's checkpoint holds, and reading it back: the one definition of its layout.

A checkpoint (``agile.paper.workdir.Checkpoints``) saves a run's :class:`Progress`: the
arrays ``{"state", "accum", "best_params"}`` (the device state as the layout saves it, the
running training sums, each seed's parameters at its best evaluation) and JSON ``meta``
(format, timing, each seed's best test metrics and its evaluation history). :func:`save`
and :func:`restore` are the loop's; :func:`read_params` reads a finished (or stopped) run's
parameters for plots and exports.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from agile.paper import workdir as workdir_lib
from agile.paper.history import History

CHECKPOINT_FORMAT = 2  # Checkpoints hold {"state", "accum", "best_params"} and JSON "meta".


@dataclasses.dataclass
class Progress:
    """What a checkpoint saves: device state, histories, best parameters, timing so far."""

    state: Any
    accum: Any
    histories: list[History]
    best_params: list[Any]  # Host copies of each seed's parameters at its best row.
    best_tests: list[dict[str, float] | None]  # Test metrics of that model, once it stopped.
    timing: dict[str, Any]
    # Each seed's mutable collections (BatchNorm's statistics) at its best row; {} for a
    # model without (and then not in the checkpoint, whose layout stays as it was).
    best_model_states: list[Any] = dataclasses.field(default_factory=list)

    @property
    def step(self) -> int:
        return max(int(np.max(np.asarray(self.state.step))), 0)



def checkpoint_arrays(layout, progress: Progress) -> dict[str, Any]:
    """The arrays of ``progress`` as a checkpoint saves them (``layout``: the run's layout)."""
    arrays = {"state": layout.to_checkpoint(progress.state),
              "accum": layout.to_checkpoint(progress.accum), "best_params": progress.best_params}
    if any(progress.best_model_states):
        arrays["best_model_states"] = progress.best_model_states
    return arrays


def restore(checkpoints: workdir_lib.Checkpoints, layout, patience: int,
            progress: Progress) -> Progress:
    """The latest checkpoint's progress, placed by ``layout`` (``progress``, the fresh one,
    itself when there is none); ``patience`` replaces the saved histories' (see below)."""
    restored = checkpoints.restore(checkpoint_arrays(layout, progress))
    if restored is None:
        return progress
    step, arrays, meta = restored
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise workdir_lib.WorkdirError(
            f"Checkpoint {checkpoints.directory / str(step)} has format "
            f"{meta.get('format')}, this version reads {CHECKPOINT_FORMAT}; use a new --workdir."
        )
    logging.info("Resumed from the checkpoint at step %d.", step)
    return Progress(
        state=layout.from_checkpoint(arrays["state"]),
        accum=layout.from_checkpoint(arrays["accum"]),
        # Patience is the config's (allow_config_change may change it), counted over the
        # whole history; the rest of each history is the checkpoint's.
        histories=[dataclasses.replace(History.from_json(h), patience=patience)
                   for h in meta["histories"]],
        best_params=[jax.device_get(params) for params in arrays["best_params"]],
        best_model_states=[jax.device_get(states) for states in
                           arrays.get("best_model_states", progress.best_model_states)],
        best_tests=meta["best_tests"],
        timing=meta["timing"],
    )


def save(checkpoints: workdir_lib.Checkpoints, layout, progress: Progress, step: int) -> None:
    """Starts saving ``progress`` as the checkpoint of ``step`` (in the background)."""
    meta = {"format": CHECKPOINT_FORMAT, "timing": progress.timing,
            "best_tests": progress.best_tests,
            "histories": [history.to_json() for history in progress.histories]}
    checkpoints.save(step, checkpoint_arrays(layout, progress), meta)


PARAMS = ("best", "last")  # What read_params reads: each seed's best evaluation, or the last step.


def read_params(workdir: str | os.PathLike, which: str = "best",
                seed_index: int = 0) -> tuple[int, dict[str, Any], int]:
    """``(step, params, seeds)``: one seed's parameters from a run's newest readable checkpoint.

    Reads the checkpoint layout :func:`save` writes (``{"state", "accum", "best_params"}``
    and JSON ``meta``), read-only: a damaged latest checkpoint falls back to an earlier one
    with a warning, nothing is deleted. ``which="best"`` gives the parameters at the seed's
    best evaluation, ``"last"`` those of the last step; ``seed_index`` picks a seed of a seed
    batch (0 .. seeds - 1; negative counts from the end); ``seeds`` is how many the run has.
    Raises :class:`~agile.paper.workdir.WorkdirError` (one line) for a folder without
    checkpoints or a seed it does not have.
    """
    if which not in PARAMS:
        raise workdir_lib.WorkdirError(f"Unknown params {which!r}. Valid: {', '.join(PARAMS)}.")
    checkpoints = workdir_lib.Checkpoints(Path(workdir), read_only=True)
    try:
        step, arrays, meta = checkpoints.read_latest()
    finally:
        checkpoints.close()
    seeds = len(meta["histories"])
    if not -seeds <= seed_index < seeds:
        raise workdir_lib.WorkdirError(
            f"{workdir} trained {seeds} seed{'s' if seeds > 1 else ''}: seed index {seed_index} "
            f"is out of range (0 .. {seeds - 1}).")
    index = seed_index % seeds
    if which == "best":
        best = arrays["best_params"]  # a list saved by orbax reads back as {"0": ..., ...}
        return step, best[index] if isinstance(best, list) else best[str(index)], seeds
    params = arrays["state"]["params"]
    if seeds > 1:  # a seed batch: every leaf has a leading seed axis
        params = jax.tree.map(lambda leaf: np.asarray(leaf)[index], params)
    return step, params, seeds
