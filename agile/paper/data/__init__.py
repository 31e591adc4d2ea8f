"""What every data source gives the experiment loop, and how the loop batches it.

A data source (chosen by ``config.data.name`` in :mod:`agile.paper.tasks`) returns
:class:`Datasets` of numpy :class:`Split`\\ s: ``inputs[i]`` is one example, ``targets[i]`` its
integer class (shape ``()``) or classes (``(T,)`` for a next-character model). The loop puts
the training split on the device once (``jax.device_put``), draws each epoch's batch indices
on the host with :func:`epoch_indices` and gathers each batch inside compiled code with
:func:`gather_batch`: no input pipeline runs during training. :func:`fingerprint` identifies
the arrays a run trained on, and :func:`check_recorded` refuses to resume a workdir on other
data than it recorded.

The sources: :mod:`agile.paper.data.images` (MNIST, Fashion-MNIST).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agile.errors import ConfigError, UserError
from agile.paper.files import DATA_FILE, WorkdirError, read_json, write_json


class DataError(UserError, ValueError):
    """A data file or setting that cannot give the asked-for data (names the file)."""


class MissingDataError(UserError, FileNotFoundError):
    """The data folder or one of its files is not there."""


class DataUnavailableError(UserError, RuntimeError):
    """tensorflow_datasets could not provide the data (no network, a broken download)."""


class Split(NamedTuple):
    """One split as numpy arrays: ``inputs`` (N, ...) and integer ``targets`` (N, ...)."""

    inputs: np.ndarray
    targets: np.ndarray


class Datasets(NamedTuple):
    """The splits for one run; ``val`` is None when there is no validation split."""

    train: Split
    val: Split | None
    test: Split


def fingerprint(datasets: Datasets) -> str:
    """A short hash of every array of ``datasets`` (shapes, dtypes and bytes): two runs with
    the same fingerprint trained and evaluated on the same data. ~0.1 s for MNIST-5k."""
    digest = hashlib.sha256()
    for name, split in zip(Datasets._fields, datasets, strict=True):
        for array in () if split is None else split:
            array = np.ascontiguousarray(array)
            digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()[:16]


def check_recorded(workdir: Path, fingerprint: str, title: str,
                   details: dict[str, Any] | None = None, is_main: bool = True) -> None:
    """Refuses to resume ``workdir`` on other data than its checkpoints were trained on.

    ``fingerprint`` (:func:`agile.paper.data.fingerprint`) identifies the arrays this run
    loaded, ``title`` names the data set. The first run (process 0) records both in
    ``data.json``; a later run whose data differ (another ``data.dir``, ``MNIST_DIR`` pointed
    elsewhere, a changed file) stops with one line naming both, before anything is restored.
    ``details`` (a text corpus' vocabulary) are recorded too, and a change of one is named.
    """
    path = workdir / DATA_FILE
    recorded = {"data": title, "fingerprint": fingerprint, **(details or {})}
    if path.is_file():
        saved = read_json(path)
        for key, value in (details or {}).items():
            if key in saved and saved[key] != value:
                raise WorkdirError(
                    f"{workdir} was trained with another {key} ({_differs(saved[key], value)}): "
                    "the data changed since. Use the data it trained on, or a new --workdir.")
        if saved.get("fingerprint") != fingerprint:
            raise WorkdirError(
                f"{workdir} was trained on other data ({saved.get('data')}, fingerprint "
                f"{saved.get('fingerprint')}) than this run loaded ({title}, fingerprint "
                f"{fingerprint}): the data folder (data.dir or its environment variable) or "
                "its files changed. Point it at the data the run trained on, or use a new "
                "--workdir.")
    elif is_main:
        write_json(path, recorded)


def _differs(saved: Any, now: Any) -> str:
    """What changed between two recorded values, briefly (a vocabulary: its characters)."""
    if isinstance(saved, str) and isinstance(now, str):
        return (f"{len(saved)} characters then, {len(now)} now; new "
                f"{''.join(sorted(set(now) - set(saved)))!r}, missing "
                f"{''.join(sorted(set(saved) - set(now)))!r}")
    return f"{saved!r} then, {now!r} now"


def epoch_indices(
    seed: int, epoch: int, num_examples: int, batch_size: int, drop_remainder: bool = True
) -> np.ndarray:
    """Returns int32 batch indices (steps_per_epoch, batch_size) for one epoch.

    The order is a fresh permutation for every epoch and a function of
    ``(seed, epoch)`` only, so a run resumed at any epoch sees the same batches.
    With ``drop_remainder`` the last ``num_examples % batch_size`` examples of
    the permutation are skipped this epoch. Without it the last batch is padded
    by wrapping around to the start of the same permutation, so every example
    appears at least once and the first few appear twice.
    """
    if not 1 <= batch_size <= num_examples:
        raise ConfigError(
            f"batch_size must be in 1..num_examples={num_examples}, got {batch_size}"
        )
    order = np.random.default_rng([seed, epoch]).permutation(num_examples).astype(np.int32)
    steps, remainder = divmod(num_examples, batch_size)
    if remainder and not drop_remainder:
        order = np.concatenate([order, order[: batch_size - remainder]])
        steps += 1
    return order[: steps * batch_size].reshape(steps, batch_size)


def gather_batch(
    inputs: jax.typing.ArrayLike, targets: jax.typing.ArrayLike, indices: jax.typing.ArrayLike
) -> dict[str, jax.Array]:
    """Gathers one batch: ``{"inputs": (B, ...), "targets": int32 (B, ...)}``.

    Pure, so it runs inside ``jax.jit`` on device-resident arrays. Floating inputs (images,
    already scaled by their source) are gathered as float32, integer inputs (characters) as
    int32.
    """
    inputs = jnp.asarray(inputs)[indices]
    dtype = jnp.float32 if jnp.issubdtype(inputs.dtype, jnp.floating) else jnp.int32
    return {"inputs": inputs.astype(dtype),
            "targets": jnp.asarray(targets)[indices].astype(jnp.int32)}
