"""Trials of a sweep and their per-seed results: names, configs, and the record of one seed.

Light on purpose (no trainer, no orbax): the study's groups (:mod:`agile.paper.study`),
the sweep backends and the report all build on these definitions.

- :class:`Trial`: one workdir of a sweep, a name (its folder) and the config it trains.
- :class:`TrialContext` and :func:`load_trial_hook`: a trial hook (``--trial_hook``), which
  both sweep backends call in each trial's process.
- :class:`SeedResult`: one seed's results, a row of a sweep's ``results.csv`` and, with its
  group, of the study's ``runs.csv`` (:mod:`agile.paper.report.results`); its fields are
  the CSV's columns, defined here once.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from agile.errors import ConfigError
from agile.paper.combos import COMBOS, combo_number


@dataclasses.dataclass(frozen=True)
class Trial:
    """One workdir of a sweep: a name (its folder) and the config it trains."""

    name: str
    config: ml_collections.ConfigDict


def trial_name(conv: str, dense: str) -> str:
    """A trial's folder name: ``combo_NN`` for a Table 1 pair, else ``<conv>-<dense>``."""
    combo = combo_number(conv, dense)
    return f"combo_{combo:02d}" if combo else f"{conv}-{dense}".replace(":", "_").replace(",", "+")


def parse_combos(values: Sequence[str]) -> list[int]:
    """Table 1 rows from ``--combos`` values: each 1..12, none twice, at least one."""
    combos = []
    for value in values:
        text = str(value).strip()
        if not text.isdigit() or int(text) not in COMBOS:
            raise ConfigError(f"--combos takes Table 1 rows 1..12, got {value!r}.")
        if int(text) in combos:
            raise ConfigError(f"--combos lists row {int(text)} twice; each row runs once.")
        combos.append(int(text))
    if not combos:
        raise ConfigError("--combos is empty: name at least one Table 1 row (1..12).")
    return combos


def trials_for_pairs(
    base: ml_collections.ConfigDict, pairs: Sequence[tuple[str, str]], seeds: int
) -> list[Trial]:
    """One trial per (conv, dense) activation pair, each training ``seeds`` seeds at once.

    Table 1's pairs are named ``combo_NN``, others ``<conv>-<dense>``.
    """
    trials = []
    for conv, dense in pairs:
        config = base.copy_and_resolve_references()
        config.model.conv_activation, config.model.dense_activation = conv, dense
        config.num_seeds = seeds
        trials.append(Trial(trial_name(conv, dense), config))
    names = [trial.name for trial in trials]
    if len(set(names)) != len(names):
        raise ConfigError(f"The sweep lists a trial twice: {', '.join(names)}.")
    return trials


def activation_trial_name(activation: str) -> str:
    """A one-activation model's trial name: its activation's (``apl:2`` -> ``apl_2``)."""
    return activation.replace(":", "_").replace(",", "+")


def trials_for_activations(
    base: ml_collections.ConfigDict, activations: Sequence[str], seeds: int
) -> list[Trial]:
    """One trial per activation of a one-activation model (ResNet, transformer), each
    training ``seeds`` seeds at once, named by the activation (``apl:2`` -> ``apl_2``)."""
    trials = []
    for activation in activations:
        config = base.copy_and_resolve_references()
        config.model.activation = activation
        config.num_seeds = seeds
        trials.append(Trial(activation_trial_name(activation), config))
    names = [trial.name for trial in trials]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"--activations must name each activation once, got "
                          f"{', '.join(activations) or 'none'}.")
    return trials


PER_TRIAL_FIELDS = ("seed", "num_seeds", "allow_config_change", "model")  # set per trial
TRIAL_MODEL_FIELDS = ("conv_activation", "dense_activation", "activation")  # set per trial


def settings(base: ml_collections.ConfigDict, seeds: int) -> dict[str, Any]:
    """What every trial of a sweep shares: the base config (less per-trial fields) and seeds."""
    config = json.loads(base.to_json_best_effort())
    shared = {k: v for k, v in config.items() if k not in PER_TRIAL_FIELDS}
    model = {k: v for k, v in config["model"].items() if k not in TRIAL_MODEL_FIELDS}
    return {"config": {**shared, "model": model}, "seed": config["seed"], "seeds": seeds}


@dataclasses.dataclass(frozen=True)
class TrialContext:
    """What a trial hook (``--trial_hook``) is told about the trial it runs in."""

    trial: str  # the trial's name (its folder in the sweep)
    workdir: Path  # the trial's workdir
    trials: tuple[str, ...]  # every trial the sweep trains now
    sweep_dir: Path
    driver_pid: int  # the process of scripts/sweep.py


def load_trial_hook(spec: str | None, context: TrialContext) -> Callable[[int], None] | None:
    """The ``after_step(step)`` hook that ``spec`` (``"module:function"``) makes for a trial.

    ``function(context)`` is called in the trial's worker before training and returns a
    callable run after every step (or None: no hook). Workers import ``module`` as the driver
    would, so it must be importable there (``PYTHONPATH``). The tests inject faults with it
    (kill a worker, hold a trial, interrupt the driver); monitoring or profiling a trial is
    another use. Both backends take it (``scripts/sweep.py --trial_hook``).
    """
    return hook_function(spec)(context) if spec else None


def hook_function(spec: str) -> Callable[[TrialContext], Callable[[int], None] | None]:
    """The function ``"module:function"`` names; one line if it cannot be imported."""
    module_name, sep, function_name = spec.partition(":")
    if not sep or not module_name or not function_name:
        raise ConfigError(f"--trial_hook takes module:function, got {spec!r}.")
    try:
        return getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"--trial_hook={spec} cannot be loaded ({err}).") from None


def trial_context(workdir: Path, trial: Trial, trials: Sequence[Trial]) -> TrialContext:
    """What a trial hook is told about ``trial`` of the sweep in ``workdir`` (this process
    drives it)."""
    return TrialContext(trial.name, Path(workdir) / trial.name, tuple(t.name for t in trials),
                        Path(workdir), os.getpid())


# ---------------------------------------------------------------------------------------------
# One seed's results.


@dataclasses.dataclass(frozen=True)
class SeedResult:
    """One seed of a trial: what its ``summary.json`` says, flattened to CSV cells.

    ``best_test_loss`` is the test loss of the model at the lowest validation loss (the
    study's metric), ``best_step`` its step; ``a_min`` .. ``b_max`` span every agile layer
    (None without one); ``wall_time_s`` is the trial's (its seeds train together).
    """

    trial: str
    combo: int | None
    conv_activation: str
    dense_activation: str
    seed: int
    steps: int
    best_step: int | None
    best_test_loss: float | None
    final_test_loss: float | None
    best_test_accuracy: float | None
    final_test_accuracy: float | None
    a_min: float | None
    a_max: float | None
    b_min: float | None
    b_max: float | None
    wall_time_s: float | None

    def row(self) -> dict[str, Any]:
        """The record as a CSV row (``{column: value}``)."""
        return dataclasses.asdict(self)


def columns(record_type: type) -> tuple[str, ...]:
    """The CSV columns of a record dataclass: its field names, in order."""
    return tuple(field.name for field in dataclasses.fields(record_type))


@functools.cache
def _type_hints(record_type: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a record dataclass, evaluated once per type: the report
    reads every CSV row through :func:`column_types` and :func:`optional_columns`, and
    evaluating the hints per row was most of the time the report tests spent reading."""
    return typing.get_type_hints(record_type)


def column_types(record_type: type) -> dict[str, type]:
    """``{column: str, int or float}`` of a record dataclass (``X | None`` gives ``X``)."""
    hints = _type_hints(record_type)
    types = {}
    for name in columns(record_type):
        options = [t for t in typing.get_args(hints[name]) or (hints[name],) if t is not type(None)]
        types[name] = options[0]
    return types


def optional_columns(record_type: type) -> frozenset[str]:
    """The columns of a record dataclass that may be empty (typed ``X | None``)."""
    hints = _type_hints(record_type)
    return frozenset(name for name in columns(record_type)
                     if type(None) in typing.get_args(hints[name]))


CSV_FIELDS = columns(SeedResult)


def seed_summaries(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each seed's results from a ``summary.json`` (one seed, or several under ``"seeds"``)."""
    return summary["seeds"] if "seeds" in summary else [summary]


def _agile_range(ranges: dict[str, dict[str, float]], name: str) -> tuple[float | None, ...]:
    """Smallest min and largest max of parameter ``name`` ("a" or "b") over agile layers."""
    layers = [r for key, r in ranges.items() if key.endswith(f"/{name}")]
    if not layers:
        return None, None
    return min(r["min"] for r in layers), max(r["max"] for r in layers)


def seed_results(summary: dict[str, Any], trial: str | None = None) -> list[SeedResult]:
    """One :class:`SeedResult` per seed of a trial's summary; a/b ranges span its layers."""
    results = []
    for result in seed_summaries(summary):
        fields = {field: result.get(field) for field in CSV_FIELDS}
        fields["trial"] = trial or trial_name(result["conv_activation"],
                                              result["dense_activation"])
        fields["a_min"], fields["a_max"] = _agile_range(result["agile_ranges"], "a")
        fields["b_min"], fields["b_max"] = _agile_range(result["agile_ranges"], "b")
        results.append(SeedResult(**fields))
    return results
