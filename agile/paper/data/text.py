"""A character corpus as a data source: the files of a folder cut into windows of characters.

What it reads: every file of ``folder`` whose name matches ``pattern`` (``*.txt`` by default,
so a README, checksums or licence next to the texts stay out), in sorted name order, as
UTF-8. A missing folder, a folder with no matching file, or files with no text at all is a
one-line error.

The vocabulary: the sorted set of the characters of the whole corpus (all splits), as one
string; character ``vocabulary[i]`` is token ``i``. It is a pure function of the files, so a
resume recomputes it and :func:`check_vocabulary` compares it with the one the run stored. A
given ``vocabulary`` is used as it is instead (same meaning: sorted is not required), and a
corpus character outside it is refused.

The split, per file (so every split has some of every book): the last 5% of its characters
are test, the 5% before them validation, the rest training (:data:`VAL_FRACTION`,
:data:`TEST_FRACTION`).

The windows: ``context + 1`` consecutive characters of one file's part (a window never
crosses a split or a file), as a ``(N, context + 1)`` uint8 array (int32 if the vocabulary
has more than 256 characters), so the corpus lives on the device (4 MB for Austen). Training
windows start every ``train_stride`` characters (default ``context``: every character after a
part's first is a target once); validation and test windows every ``context``, so each of
their characters is predicted exactly once, after the ``context`` characters before it in
its window (a tail shorter than a window is left out). A split is
``Split(inputs, targets) = Split(w[:, :-1], w[:, 1:])``: the model reads ``context``
characters and predicts each next one, with the loss in nats per character;
:func:`bits_per_character` converts it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from agile.errors import ConfigError
from agile.paper.data import DataError, Datasets, MissingDataError, Split

VAL_FRACTION = 0.05
TEST_FRACTION = 0.05
DEFAULT_PATTERN = "*.txt"


def bits_per_character(nats: float) -> float:
    """A per-character loss in nats as bits per character (divided by ln 2)."""
    return nats / math.log(2)


def read_corpus(folder: str | Path, pattern: str = DEFAULT_PATTERN) -> list[tuple[str, str]]:
    """``(file name, text)`` of each file in ``folder`` matching ``pattern``, sorted by name.

    Raises MissingDataError for a missing folder or one without matching files, DataError
    for a file that is not UTF-8 or a corpus without a single character.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingDataError(f"Text folder {folder} does not exist or is not a folder.")
    paths = sorted(p for p in folder.glob(pattern) if p.is_file())
    if not paths:
        raise MissingDataError(f"Text folder {folder} has no file matching {pattern!r}.")
    texts = []
    for path in paths:
        try:
            texts.append((path.name, path.read_text(encoding="utf-8")))
        except UnicodeDecodeError as err:
            raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}).") from None
        except OSError as err:
            raise DataError(f"Cannot read {path}: {err.strerror}. Make the file readable for "
                            "this user.") from None
    if not any(text for _, text in texts):
        raise DataError(f"Text folder {folder}: its {len(paths)} file(s) matching {pattern!r} "
                        "are empty.")
    return texts


def corpus_vocabulary(texts: list[tuple[str, str]]) -> str:
    """The sorted set of the characters of all ``texts``, as one string."""
    return "".join(sorted(set().union(*(set(text) for _, text in texts))))


def check_vocabulary(stored: str, current: str) -> None:
    """One-line ConfigError unless the vocabulary a run stored equals the corpus' now (a
    resume on changed files would read the checkpoint's token ids as other characters)."""
    if stored != current:
        added = "".join(sorted(set(current) - set(stored)))
        lost = "".join(sorted(set(stored) - set(current)))
        raise ConfigError(
            f"The corpus' vocabulary ({len(current)} characters) differs from the run's stored "
            f"one ({len(stored)}): new {added!r}, missing {lost!r}, or another order. Resume on "
            "the same files, or start a new workdir."
        )


def encode(name: str, text: str, vocabulary: str) -> np.ndarray:
    """``text`` as token ids of ``vocabulary`` (uint8 up to 256 characters, else int32);
    ConfigError naming the file and characters outside the vocabulary."""
    index = {char: i for i, char in enumerate(vocabulary)}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        raise ConfigError(f"{name} has characters outside the given vocabulary: "
                          f"{''.join(unknown)!r}.")
    dtype = np.uint8 if len(vocabulary) <= 256 else np.int32
    return np.fromiter((index[c] for c in text), dtype=dtype, count=len(text))


def split_bounds(length: int) -> tuple[int, int]:
    """``(val_start, test_start)`` of a file of ``length`` characters: test is the last
    ``round(TEST_FRACTION * length)``, validation the ``round(VAL_FRACTION * length)``
    before it."""
    test_start = length - round(TEST_FRACTION * length)
    return test_start - round(VAL_FRACTION * length), test_start


def windows(ids: np.ndarray, context: int, stride: int) -> np.ndarray:
    """Windows of ``context + 1`` ids starting every ``stride``, shape ``(N, context + 1)``."""
    size = context + 1
    if len(ids) < size:
        return np.zeros((0, size), ids.dtype)
    starts = np.arange(0, len(ids) - size + 1, stride)
    return ids[starts[:, None] + np.arange(size)]


def _split(parts: list[np.ndarray], name: str, context: int) -> Split:
    stacked = np.concatenate(parts)
    if not len(stacked):
        raise DataError(f"The corpus is too short for context {context}: its {name} split has "
                        f"no window of {context + 1} characters.")
    return Split(stacked[:, :-1], stacked[:, 1:])


def _check_whole(what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ConfigError(f"{what} must be a whole number >= 1, got {value!r}.")
    return int(value)


def load_text(
    folder: str | Path,
    context: int,
    train_stride: int | None = None,
    vocabulary: str | None = None,
    pattern: str = DEFAULT_PATTERN,
) -> tuple[Datasets, str]:
    """``(Datasets(train, val, test), vocabulary)`` of the corpus in ``folder`` (see the
    module's docstring for the files, vocabulary, split and windows)."""
    _check_whole("context", context)
    stride = context if train_stride is None else _check_whole("train_stride", train_stride)
    texts = read_corpus(folder, pattern)
    vocabulary = corpus_vocabulary(texts) if vocabulary is None else vocabulary
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for name, text in texts:
        ids = encode(name, text, vocabulary)
        val_start, test_start = split_bounds(len(ids))
        parts["train"].append(windows(ids[:val_start], context, stride))
        parts["val"].append(windows(ids[val_start:test_start], context, context))
        parts["test"].append(windows(ids[test_start:], context, context))
    datasets = Datasets(*(_split(parts[s], s, context) for s in ("train", "val", "test")))
    return datasets, vocabulary


def spread_subset(split: Split, count: int) -> Split:
    """``count`` windows of ``split`` spread evenly over it (every book keeps its share; the
    same windows every run), or all of them for 0 or more than it has."""
    if not count or count >= len(split.inputs):
        return split
    keep = np.linspace(0, len(split.inputs) - 1, count).round().astype(np.int64)
    return Split(split.inputs[keep], split.targets[keep])
