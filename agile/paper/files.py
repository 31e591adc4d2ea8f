"""The study's file names and plain file I/O: atomic writes, JSON documents, JSON rows, and
the comparison of two saved configs (:func:`config_differences`).

Standard library only (and :mod:`agile.errors`): the report (:mod:`agile.paper.report`) and
``scripts/plot_run.py`` read a run's or a sweep's files through this module without importing
orbax, TensorBoard or the trainer. :mod:`agile.paper.workdir` (locks, the config guard,
checkpoints) builds on it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agile.errors import UserError

# A run's folder (a workdir of agile.paper.train.train_and_evaluate).
CONFIG_FILE = "config.json"
DATA_FILE = "data.json"  # which data the checkpoints were trained on: {"data", "fingerprint"}
ROWS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"
CHECKPOINT_DIR = "checkpoints"
DEPENDENCY_LOG = "orbax.log"  # orbax's and TensorStore's own messages, kept out of the terminal
# A sweep's folder (agile.paper.sweep): the settings every trial shares.
SWEEP_FILE = "sweep.json"

UNCHECKED_CONFIG_FIELDS = ("allow_config_change",)  # a resume may always change these

_log = logging.getLogger(__name__)  # propagates to absl's handler on the root logger


class WorkdirError(UserError, RuntimeError):
    """A workdir that cannot be used as asked: in use, another config, damaged."""


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model.pooling": "max", ...}``: a nested config dict with dotted field names."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_differences(saved: dict[str, Any], config: dict[str, Any],
                       defaults: dict[str, Any] | None = None) -> list[str]:
    """Dotted names of the fields in which ``config`` differs from ``saved``.

    A field ``saved`` lacks that ``config`` holds at its default value (``defaults``) is no
    difference: code that added the field with a default reproduces what trained ``saved``.
    """
    old, new, default = flat_config(saved), flat_config(config), flat_config(defaults or {})
    return sorted(
        key for key in set(old) | set(new)
        if key not in UNCHECKED_CONFIG_FIELDS and old.get(key) != new.get(key)
        and not (key not in old and key in default and new.get(key) == default[key])
    )


def read_json(path: Path, remedy: str = "restore or delete it") -> Any:
    """The JSON document in ``path``; a damaged one raises :class:`WorkdirError` naming it."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise WorkdirError(f"{path} is not valid JSON ({err}); {remedy}.") from err


def write_text_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename: all or nothing.

    A failure (a full or read-only disk, an immutable file) raises the OSError of its errno
    naming ``path`` (a full disk fails ``write`` with no file name at all) and leaves no
    temporary file behind."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with open(temporary, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        if err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(path)) from err


def write_json(path: Path, document: Any) -> None:
    """``document`` as indented JSON with sorted keys, written atomically."""
    write_text_atomically(path, json.dumps(document, indent=2, sort_keys=True) + "\n")


def _row_lines(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def write_rows(path: Path, rows: Iterable[dict[str, Any]]) -> bool:
    """Replaces ``metrics.jsonl`` with ``rows``, atomically; returns whether an existing file
    held anything else (a file that already holds exactly these rows is left as it is). A
    folder in the file's place is refused with one line."""
    if path.is_dir():
        raise WorkdirError(f"{path} is a folder, not the run's rows file; move it away and rerun "
                           "(the rows are rebuilt from the checkpoint).")
    text = _row_lines(rows)
    old = path.read_text() if path.exists() else None
    if old != text:
        write_text_atomically(path, text)
    return old is not None and old != text


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Appends ``rows`` with one write, flushed: a crash can tear at most the last line."""
    with open(path, "a") as file:
        file.write(_row_lines(rows))
        file.flush()


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Reads ``metrics.jsonl``; a torn last line (a crash mid-write) is dropped with a warning.

    A damaged line anywhere else raises :class:`WorkdirError` naming file and line.
    """
    lines = Path(path).read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            if number == len(lines):
                _log.warning("%s: dropped the torn last line %d (%s).", path, number, err)
                break
            raise WorkdirError(f"{path}, line {number}: not a JSON row ({err}).") from err
    return rows
