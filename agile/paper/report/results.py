"""The study's results files: their records, each defined once, one reader and one writer.

A results folder (``docs/results/`` is the committed one; ``scripts/study.py`` exports a
study into ``<workdir>/results/`` by default) holds:

- ``runs.csv``: one :class:`Run` per group, trial and seed (a
  :class:`~agile.paper.trials.SeedResult` and its group);
- ``curves.csv``: one :class:`Curve` per evaluation of each seed (Table 1 and the
  dense-only network);
- ``agile_ranges.csv``: one :class:`Range` per agile layer, parameter and seed at the end;
- ``combo12_seed0_params.npz``: the final parameters of Table 1's combo 12, seed 0,
  flattened ``"layer/param"`` (for the learned-activation figures);
- ``transformer_agile_gelu_seed0_params.npz``: likewise, the transformer's agile GELU, seed 0
  (which layers' a and b moved);
- ``machine.json``: per group, the machines that timed its rows (:class:`Machine`; a group
  whose rows were published from two machines names both, in the order they were published);
- ``settings.json``: each group's settings (what its sweep folder's ``sweep.json`` holds: the
  base config and the seeds per trial), so rows trained otherwise are never merged into it.

Each CSV is described by a :class:`Table` (file, record type, key, columns) and each cell is
parsed by its record field's type. :func:`load_results` refuses, in one line naming file,
line and field, what would otherwise turn into wrong numbers: a cell that is not of its
type, NaN or inf, an empty required cell, a row with too few or too many cells, a file cut
off mid-row, and two rows with the same key that differ (an exact repeat is dropped with a
warning). :func:`write_results` writes a folder; :func:`merge` adds one study's results to
another's (publishing a run into the committed study), refuses rows of a group trained
with other settings than the group's rows there and adds the machine that timed a group's
new rows to the group's own.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from agile.errors import UserError
from agile.paper.files import config_differences, flat_config, write_text_atomically
from agile.paper.trials import CSV_FIELDS, SeedResult, column_types, columns, optional_columns

PARAMS = "combo12_seed0_params.npz"
TRANSFORMER_PARAMS = "transformer_agile_gelu_seed0_params.npz"
PARAMS_FILES = {PARAMS: ("params", "combo 12, seed 0"),  # file: (Results field, whose)
                TRANSFORMER_PARAMS: ("transformer_params", "the transformer's agile GELU, seed 0")}
MACHINE = "machine.json"
SETTINGS = "settings.json"
BATCHING_SETTINGS = ("seeds",)  # seeds per trial: how a group's seeds were batched, not trained
EXPORT_AGAIN = ("export it again (scripts/study.py --skip_training "
                "--results_dir=<this folder>)")
# For the committed study (docs/results), which an export would replace with one workdir's rows.
RESTORE_PUBLISHED = ("restore the committed file (git checkout -- <this folder>) and publish "
                     "again (scripts/study.py --skip_training --publish)")


class ReportError(UserError):
    """Results the report cannot be written from (missing, malformed or conflicting files)."""


# ---------------------------------------------------------------------------------------------
# The records.


@dataclasses.dataclass(frozen=True)
class Run(SeedResult):
    """A row of ``runs.csv``: one seed's results (:class:`SeedResult`) in a study group."""

    group: str


@dataclasses.dataclass(frozen=True)
class Curve:
    """A row of ``curves.csv``: one evaluation of one seed (a loss is None where not measured)."""

    group: str
    trial: str
    seed: int
    step: int
    val_loss: float | None
    test_loss: float | None


@dataclasses.dataclass(frozen=True)
class Range:
    """A row of ``agile_ranges.csv``: one agile parameter of one layer and seed, at the end."""

    group: str
    trial: str
    seed: int
    layer: str
    param: str
    min: float
    max: float
    mean: float


@dataclasses.dataclass(frozen=True)
class Machine:
    """A machine that timed a group's rows (``machine.json`` maps each group to a list of
    them): the CPU, logical CPUs, memory (GiB), JAX version and backend."""

    cpu: str
    logical_cpus: int
    memory_gib: float
    jax: str
    backend: str


@dataclasses.dataclass(frozen=True)
class Table:
    """One CSV file of a results folder.

    ``key`` identifies a row (two rows with one key are one row twice, or a conflict);
    ``columns`` is the file's column order; ``timing`` are the fields that may differ
    between two exports of the same run (they measure the machine, not the model).
    """

    name: str
    attribute: str  # the Results field holding its rows
    record: type
    key: tuple[str, ...]
    columns: tuple[str, ...]
    timing: frozenset[str] = frozenset()

    def key_of(self, record: Any) -> tuple:
        """The key of ``record``: its values of the ``key`` fields."""
        return tuple(getattr(record, field) for field in self.key)

    def describe(self, key: Sequence[Any]) -> str:
        """``"group=table1, trial=combo_12, seed=0"``."""
        return ", ".join(f"{field}={value}" for field, value in zip(self.key, key, strict=True))


RUNS = Table("runs.csv", "runs", Run, ("group", "trial", "seed"), ("group", *CSV_FIELDS),
             frozenset({"wall_time_s"}))
CURVES = Table("curves.csv", "curves", Curve, ("group", "trial", "seed", "step"),
               columns(Curve))
RANGES = Table("agile_ranges.csv", "ranges", Range, ("group", "trial", "seed", "layer", "param"),
               columns(Range))
TABLES = (RUNS, CURVES, RANGES)
FILES = (*(table.name for table in TABLES), *PARAMS_FILES, MACHINE, SETTINGS)


@dataclasses.dataclass(frozen=True)
class Results:
    """A results folder in memory: the CSVs' records, the parameters of combo 12 and of the
    transformer's agile GELU (seed 0 each), the machines that timed each group's rows, the
    groups' settings."""

    runs: list[Run]
    curves: list[Curve] = dataclasses.field(default_factory=list)
    ranges: list[Range] = dataclasses.field(default_factory=list)
    params: dict[str, np.ndarray] | None = None
    machines: dict[str, tuple[Machine, ...]] | None = None  # group -> what timed its rows
    settings: dict[str, dict[str, Any]] | None = None  # group -> its sweep.json
    transformer_params: dict[str, np.ndarray] | None = None

    def rows(self, table: Table) -> list:
        """The records of ``table`` (``runs``, ``curves`` or ``ranges``)."""
        return getattr(self, table.attribute)


# ---------------------------------------------------------------------------------------------
# Reading.


def _cell(text: str, kind: type, optional: bool, column: str, where: str,
          remedy: str = EXPORT_AGAIN) -> Any:
    """One CSV cell as ``kind`` (None when empty and ``optional``); finite numbers only."""
    if text == "":
        if optional:
            return None
        raise ReportError(f"{where}: {column} is empty; {remedy}.")
    if kind is str:
        return text
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ReportError(f"{where}: a cell is not {what} ({column} = {text!r}).") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ReportError(f"{where}: {column} is {text}, not a finite number; a study's results "
                          "hold none (a diverged run or a damaged file?).")
    return value


def _check_header(header: Sequence[str], table: Table, name: str, remedy: str) -> None:
    """Raises :class:`ReportError` naming the columns of ``table`` the header lacks."""
    missing = [column for column in table.columns if column not in header]
    if missing:
        raise ReportError(f"{name} lacks the column(s) {', '.join(missing)}; {remedy}.")


def _record(row: dict, header: Sequence[str], table: Table, where: str, remedy: str) -> Any:
    """The record of one ``csv.DictReader`` row; a row of another width is refused."""
    if None in row:  # cells beyond the header's
        raise ReportError(f"{where}: {len(header) + len(row[None])} cells where the header has "
                          f"{len(header)}; {remedy}.")
    if any(cell is None for cell in row.values()):  # a torn row: fewer cells than the header
        cells = sum(cell is not None for cell in row.values())
        raise ReportError(f"{where}: {cells} of the header's {len(header)} cells (a torn row); "
                          f"{remedy}.")
    types, optional = column_types(table.record), optional_columns(table.record)
    return table.record(**{column: _cell(row[column], types[column], column in optional, column,
                                         where, remedy) for column in table.columns})


def _differing(first: Any, second: Any, fields: Iterable[str]) -> list[str]:
    """The fields in which two records differ."""
    return [field for field in fields if getattr(first, field) != getattr(second, field)]


def parse_table(text: str, table: Table, name: str | None = None,
                remedy: str = EXPORT_AGAIN) -> list:
    """The records of CSV ``text`` holding ``table`` (``name``: the file, for messages).

    Refuses (:class:`ReportError`, one line naming file, line and field) a missing column,
    a cell not of its field's type, NaN or inf, an empty required cell, a row of another
    width, text cut off mid-row (no final newline) and two rows with one key that differ.
    An exact repeat of a row is dropped with a warning. Unknown columns are ignored.
    ``remedy`` is the advice the messages end with.
    """
    name = name or table.name
    if text and not text.endswith("\n"):
        raise ReportError(f"{name} line {text.count(chr(10)) + 1}: the file ends mid-row (no "
                          f"final newline), so it was cut off; {remedy}.")
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    _check_header(header, table, name, remedy)
    records, seen = [], {}
    for row in reader:
        where = f"{name} line {reader.line_num}"
        record = _record(row, header, table, where, remedy)
        key = table.key_of(record)
        if key not in seen:
            seen[key] = (reader.line_num, record)
            records.append(record)
            continue
        line, first = seen[key]
        if first == record:
            logging.warning("%s line %d repeats line %d exactly; the repeat is dropped.", name,
                            reader.line_num, line)
            continue
        raise ReportError(
            f"{name} lines {line} and {reader.line_num}: two rows for {table.describe(key)} that "
            f"differ in {', '.join(_differing(first, record, table.columns))}; delete the wrong "
            f"one or {remedy}.")
    return records


def _read_params(path: Path, remedy: str) -> dict[str, np.ndarray]:
    """The flattened ``"layer/param"`` arrays of a parameter file (:data:`PARAMS_FILES`)."""
    try:
        with open(path, "rb") as file, np.load(file) as archive:  # closed if np.load fails
            return {key: np.asarray(archive[key]) for key in sorted(archive.files)}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise ReportError(f"{path} cannot be read ({type(err).__name__}: {err}); "
                          f"{remedy}.") from None


def _machine(saved: Any, where: str, remedy: str) -> Machine:
    """One machine's JSON object as a :class:`Machine`; refuses one that lacks a field or
    holds one of another type (``where``: the file and the group, for the message)."""
    types = column_types(Machine)
    bad = [name for name, kind in types.items() if not isinstance(saved, dict)
           or not isinstance(saved.get(name), (int, float) if kind is float else kind)
           or isinstance(saved.get(name), bool)]
    if bad:
        raise ReportError(f"{where} lacks a valid {', '.join(bad)}; {remedy} or delete it.")
    return Machine(**{name: saved[name] for name in types})


def _read_machines(path: Path, remedy: str) -> dict[str, tuple[Machine, ...]]:
    """``machine.json``: ``{group: [machine, ...]}``; a damaged or incomplete file is refused,
    and so is the one-machine format of earlier versions (which machine timed which group is
    not in it, so it is not guessed)."""
    try:
        saved = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} is not valid JSON ({err}); {remedy} or delete "
                          "it.") from None
    if isinstance(saved, dict) and isinstance(saved.get("cpu"), str):
        raise ReportError(
            f"{path} names one machine for every group (the format before each group recorded "
            'its own); write it as {"<group>": [<machine>, ...]} naming the machines that timed '
            "each group's rows (the file does not say which, so they are not guessed).")
    if not isinstance(saved, dict) or not all(isinstance(v, list) and v for v in saved.values()):
        raise ReportError(f"{path} does not map each group to the machines that timed its rows; "
                          f"{remedy} or delete it.")
    return {group: tuple(_machine(entry, f"{path}: a machine of group {group}", remedy)
                         for entry in entries) for group, entries in saved.items()}


def _read_settings(path: Path, remedy: str) -> dict[str, dict[str, Any]]:
    """``settings.json``: ``{group: settings}``; a damaged file is refused."""
    try:
        saved = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ReportError(f"{path} is not valid JSON ({err}); {remedy}.") from None
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        raise ReportError(f"{path} does not map each group to its settings; {remedy}.")
    return saved


def load_results(results_dir: Path, remedy: str = EXPORT_AGAIN) -> Results:
    """The results in ``results_dir``; only ``runs.csv`` must exist (the rest may be absent).

    A damaged file is refused with one line ending in ``remedy`` (:data:`RESTORE_PUBLISHED`
    for the committed study, which an export would replace)."""
    results_dir = Path(results_dir)
    if not (results_dir / RUNS.name).is_file():
        raise ReportError(f"No {RUNS.name} in {results_dir}: run scripts/study.py first (it "
                          "trains the groups and exports their results there).")
    tables = {}
    for table in TABLES:
        path = results_dir / table.name
        tables[table.attribute] = (parse_table(path.read_text(), table, str(path), remedy)
                                   if path.is_file() else [])
    files = {name: results_dir / name if (results_dir / name).is_file() else None
             for name in (*PARAMS_FILES, MACHINE, SETTINGS)}
    params = {field: _read_params(files[name], remedy) if files[name] else None
              for name, (field, _) in PARAMS_FILES.items()}
    return Results(**tables, **params,
                   machines=_read_machines(files[MACHINE], remedy) if files[MACHINE] else None,
                   settings=_read_settings(files[SETTINGS], remedy) if files[SETTINGS] else None)


# ---------------------------------------------------------------------------------------------
# Writing.


def csv_text(records: Iterable[Any], table: Table) -> str:
    """The records as CSV text in ``table``'s columns (None as an empty cell; floats as repr)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    for record in records:
        writer.writerow([getattr(record, column) for column in table.columns])
    return out.getvalue()


def _write_params(path: Path, params: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` through a temporary file and a rename."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "wb") as file:
        np.savez_compressed(file, **params)
    temporary.replace(path)


def write_results(results: Results, results_dir: Path) -> list[Path]:
    """Writes ``results`` into ``results_dir`` (created if needed); returns the paths written.

    The folder then holds exactly these results: a parameter or machine file that
    ``results`` lacks is removed, so no file of another study stays beside them.
    """
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for table in TABLES:
        written.append(results_dir / table.name)
        write_text_atomically(written[-1], csv_text(results.rows(table), table))
    contents = [(name, getattr(results, field)) for name, (field, _) in PARAMS_FILES.items()]
    machines = {group: [dataclasses.asdict(machine) for machine in group_machines]
                for group, group_machines in (results.machines or {}).items()}
    for name, content in (*contents, (MACHINE, machines or None),
                          (SETTINGS, results.settings or None)):
        path = results_dir / name
        if content is None:
            path.unlink(missing_ok=True)
        elif name in PARAMS_FILES:
            _write_params(path, content)
            written.append(path)
        else:
            write_text_atomically(path, json.dumps(content, indent=2, sort_keys=name == SETTINGS)
                                  + "\n")
            written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# Merging one study's results into another's.


def _merge_rows(table: Table, existing: list, new: list, where: str) -> list:
    """``existing`` then the rows of ``new`` with a new key; refuses a key whose rows differ
    in a field other than ``table.timing`` (naming the first such key and its fields)."""
    index = {table.key_of(row): row for row in existing}
    added, conflicts = [], []
    for row in new:
        key = table.key_of(row)
        if key not in index:
            index[key] = row
            added.append(row)
            continue
        fields = _differing(index[key], row, [c for c in table.columns if c not in table.timing])
        if fields:
            conflicts.append((key, fields, index[key], row))
    if conflicts:
        key, fields, old, row = conflicts[0]
        values = "; ".join(f"{field} {getattr(old, field)!r} there, {getattr(row, field)!r} here"
                           for field in fields)
        more = f" (and {len(conflicts) - 1} more rows)" if len(conflicts) > 1 else ""
        raise ReportError(
            f"{where}/{table.name} already has {table.describe(key)} with other values "
            f"({values}){more}; nothing was written. Remove those rows there to replace them, "
            "or publish a study that agrees with it.")
    return [*existing, *added]


def settings_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The dotted fields in which two groups' settings differ, how the seeds were batched
    aside (a field ``old`` lacks that ``new`` holds at its default is no difference)."""
    from agile.paper.config import get_config
    from agile.paper.trials import settings

    defaults = settings(get_config(), new.get("seeds", 1))
    return [field for field in config_differences(old, new, defaults)
            if field not in BATCHING_SETTINGS]


def check_settings(existing: dict[str, dict] | None, new: dict[str, dict] | None,
                   groups: Iterable[str], where: str | Path) -> None:
    """Refuses (:class:`ReportError`, one line naming the group and the differing fields) new
    rows of ``groups`` trained with other settings than the group's rows in ``where``, or
    whose settings are unknown while those there are recorded. Where ``where`` records no
    settings for a group (results of an older version), a warning says it is not checked."""
    for group in groups:
        old, now = (existing or {}).get(group), (new or {}).get(group)
        if old is None:
            if now is not None:
                logging.warning("%s/%s records no settings for group %s, so the rows published "
                                "now are not checked against its rows; recording theirs.",
                                where, SETTINGS, group)
            continue
        if now is None:
            raise ReportError(
                f"The rows of group {group} published now record no settings, and {where}/"
                f"{SETTINGS} does, so whether they were trained alike cannot be checked; nothing "
                f"was written. {EXPORT_AGAIN[0].upper()}{EXPORT_AGAIN[1:]} with this version.")
        fields = settings_differences(old, now)
        if fields:
            before, after = flat_config(old), flat_config(now)
            shown = "; ".join(f"{field} {before.get(field)!r} there, {after.get(field)!r} here"
                              for field in fields[:4])
            more = f"; and {len(fields) - 4} more" if len(fields) > 4 else ""
            raise ReportError(
                f"{where}/{SETTINGS}: group {group} was trained with other settings than the "
                f"rows published now ({shown}{more}); nothing was written. Publish rows trained "
                "with the group's settings there (the study's command without other "
                "--overrides), or publish into another --docs_dir.")


def merge(existing: Results, new: Results, where: str | Path = "the results") -> Results:
    """``existing`` with the rows of ``new`` that it does not have yet.

    Rows whose key both have must agree in every field but the timing ones
    (``wall_time_s``): otherwise :class:`ReportError` names the key and the fields (and
    nothing is merged). Rows only in ``existing`` are kept, in their order; new rows follow.
    Combo 12's parameters: both sets must be equal where both exist. Each group keeps the
    machines that timed its rows in ``existing``, and a group given rows now adds ``new``'s
    (:func:`_merge_machines`). A group with rows in both must have been trained with the same
    settings (:func:`check_settings`); the settings of groups new to ``existing`` are added
    to its own.
    """
    shared = {run.group for run in existing.runs} & {run.group for run in new.runs}
    check_settings(existing.settings, new.settings, sorted(shared), where)
    rows = {table.attribute: _merge_rows(table, existing.rows(table), new.rows(table), str(where))
            for table in TABLES}
    params = {field: _merge_params(getattr(existing, field), getattr(new, field),
                                   f"{where}/{name}", whose)
              for name, (field, whose) in PARAMS_FILES.items()}
    settings = {**(new.settings or {}), **(existing.settings or {})} or None
    added = dict.fromkeys(row.group for table in TABLES
                          for row in rows[table.attribute][len(existing.rows(table)):])
    machines = _merge_machines(existing, new, list(added), f"{where}/{MACHINE}")
    return Results(**rows, **params, machines=machines, settings=settings)


def _merge_machines(existing: Results, new: Results, added: Sequence[str],
                    path: str) -> dict[str, tuple[Machine, ...]] | None:
    """The machines of a merge: ``existing``'s, and for each group in ``added`` (given rows
    now) the machines that timed them (``new``'s) that the group does not name yet, so a
    group timed on two machines names both (with a warning). A group whose machines are
    unknown on either side (rows there or now without a machine) is left as it is, with a
    warning: naming the machine of some of its rows would mislabel the others."""
    machines = dict(existing.machines or {})
    had_rows = {run.group for run in existing.runs}
    for group in added:
        before, now = machines.get(group, ()), (new.machines or {}).get(group, ())
        if not now or (group in had_rows and not before):
            logging.warning("%s: the rows of group %s %s record no machine, so its machines "
                            "are left as they are (%s).", path, group,
                            "published now" if not now else "there",
                            ", ".join(m.cpu for m in before) or "none")
            continue
        extra = tuple(machine for machine in now if machine not in before)
        if before and extra:
            logging.warning("%s: group %s was timed on %s and its rows added now on %s; it names "
                            "both.", path, group, ", ".join(m.cpu for m in before),
                            ", ".join(m.cpu for m in extra))
        machines[group] = before + extra
    return machines or None


def _merge_params(existing: dict | None, new: dict | None, path: str, whose: str) -> dict | None:
    """One parameter file of a merge: ``existing``'s (``new``'s if it has none); both must be
    equal where both exist."""
    if existing is not None and new is not None and not (
            existing.keys() == new.keys()
            and all(np.array_equal(existing[k], new[k]) for k in new)):
        raise ReportError(f"{path} holds other parameters of {whose} than this study's; "
                          "nothing was written. Delete it there to replace it.")
    return existing if existing is not None else new
