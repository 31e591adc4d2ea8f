"""agile.paper.data.text: a folder of UTF-8 files as windows of characters."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
from agile_testing import REPO_ROOT

from agile.errors import ConfigError
from agile.paper.data import DataError, MissingDataError
from agile.paper.data import text as text_data

# The shared corpus: TEXT_DIR (.ci/run sets it), else ../shared/data/austen beside the checkout.
AUSTEN = Path(os.environ.get("TEXT_DIR") or REPO_ROOT.parent / "shared" / "data" / "austen")


def _corpus(tmp_path, texts):
    for name, text in texts.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


def _decode(ids, vocabulary):
    return "".join(vocabulary[i] for i in np.asarray(ids).ravel())


def test_vocabulary_split_and_windows_of_a_tiny_corpus(tmp_path):
    """Sorted vocabulary of all files; per file the last 5% test and the 5% before it
    validation; targets are inputs shifted by one; validation and test windows predict every
    character of their part once; only *.txt files are read, in name order."""
    b_text = "".join(chr(ord("a") + i % 7) for i in range(400))
    a_text = "xyz" * 100 + "é!"
    folder = _corpus(tmp_path, {"b.txt": b_text, "a.txt": a_text, "README": "QQQ"})
    (datasets, vocabulary) = text_data.load_text(folder, context=4)
    assert vocabulary == "".join(sorted(set(a_text + b_text)))
    assert "Q" not in vocabulary
    for split in datasets:
        assert split[0].dtype == np.uint8 and split[0].shape[1] == 4
        np.testing.assert_array_equal(split[0][:, 1:], split[1][:, :-1])
    # a.txt: 302 characters -> test the last 15, validation the 15 before; windows of 5
    # every 4 -> 3 test windows; b.txt: 400 -> 20 and 20 -> 4 windows each.
    assert len(datasets.test[0]) == 3 + 4 and len(datasets.val[0]) == 3 + 4
    first_test = _decode(datasets.test[0][0], vocabulary) + _decode(datasets.test[1][0, -1:],
                                                                    vocabulary)
    assert first_test == a_text[302 - 15:302 - 15 + 5]
    targets = _decode(datasets.test[1][:3], vocabulary)
    assert targets == a_text[302 - 15 + 1:302 - 15 + 13]
    assert len(datasets.train[0]) == (272 - 5) // 4 + 1 + (360 - 5) // 4 + 1
    strided, _ = text_data.load_text(folder, context=4, train_stride=1)
    assert len(strided.train[0]) == 272 - 4 + 360 - 4


def test_a_given_vocabulary_is_kept_and_refuses_other_characters(tmp_path):
    folder = _corpus(tmp_path, {"a.txt": "abcabc" * 20})
    datasets, vocabulary = text_data.load_text(folder, 3, vocabulary="cbad")
    assert vocabulary == "cbad"
    assert _decode(datasets.train[0][0], vocabulary) == "abc"
    with pytest.raises(ConfigError, match=r"^a.txt has characters outside the given "
                                          r"vocabulary: 'bc'\.$"):
        text_data.load_text(folder, 3, vocabulary="a")


def test_one_line_errors(tmp_path):
    """Missing folder, no text files, empty files, non-UTF-8, context or stride < 1, a corpus
    too short for the context, a vocabulary that changed since the run began."""
    with pytest.raises(MissingDataError, match=r"does not exist or is not a folder\.$"):
        text_data.load_text(tmp_path / "nowhere", 8)
    with pytest.raises(MissingDataError, match=r"has no file matching '\*\.txt'\.$"):
        text_data.load_text(tmp_path, 8)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"file\(s\) matching '\*\.txt' are empty\.$"):
        text_data.load_text(tmp_path, 8)
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe")
    with pytest.raises(DataError, match=r"bad.txt: not UTF-8 text"):
        text_data.load_text(tmp_path, 8)
    (tmp_path / "bad.txt").write_text("short text " * 10)
    for context in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match=r"^context must be a whole number >= 1, got"):
            text_data.load_text(tmp_path, context)
    with pytest.raises(ConfigError, match=r"^train_stride must be a whole number >= 1, got 0"):
        text_data.load_text(tmp_path, 4, train_stride=0)
    with pytest.raises(DataError, match=r"too short for context 64: its val split has no "
                                        r"window of 65 characters\.$"):
        text_data.load_text(tmp_path, 64)
    text_data.check_vocabulary("abc", "abc")
    with pytest.raises(ConfigError, match=r"^The corpus' vocabulary \(4 characters\) differs "
                                          r"from the run's stored one \(3\): new 'd'"):
        text_data.check_vocabulary("abc", "abcd")


def test_bits_per_character():
    assert text_data.bits_per_character(math.log(2)) == pytest.approx(1.0)
    assert text_data.bits_per_character(math.log(81)) == pytest.approx(math.log2(81))


@pytest.mark.skipif(not AUSTEN.is_dir(), reason="needs Jane Austen's novels in TEXT_DIR")
def test_austen_corpus_has_its_documented_size():
    """The six novels: 4,025,028 characters, 81 distinct; the windows cover ~90/5/5%."""
    texts = text_data.read_corpus(AUSTEN)
    assert [name for name, _ in texts][0] == "emma.txt" and len(texts) == 6
    assert sum(len(text) for _, text in texts) == 4_025_028
    datasets, vocabulary = text_data.load_text(AUSTEN, context=128)
    assert len(vocabulary) == 81
    sizes = [split[1].size for split in datasets]
    assert sum(sizes) == pytest.approx(4_025_028, rel=1e-3)
    assert sizes[1] == pytest.approx(0.05 * 4_025_028, rel=1e-2)
    assert sizes[2] == pytest.approx(0.05 * 4_025_028, rel=1e-2)
