"""Tests for the image data sources (agile/paper/data/images.py: MNIST, Fashion-MNIST) and
the batching every source shares (agile/paper/data/__init__.py).

Synthetic IDX files cover decoding and every kind of damage; tests on real
MNIST run only when MNIST_DIR points at the four IDX files.
"""

import gzip
import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest
from agile_testing import REPO_ROOT  # noqa: E402

from agile.paper import data as data_lib
from agile.paper.config import get_config
from agile.paper.data import images as data
from agile.paper.data.images import idx_bytes

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
TRAIN_IMAGES, TRAIN_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
TEST_IMAGES, TEST_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"
needs_mnist = pytest.mark.skipif(not os.environ.get("MNIST_DIR"), reason="MNIST_DIR is not set")


def write_file(directory: Path, name: str, content: bytes, gz: bool) -> Path:
    path = directory / (f"{name}.gz" if gz else name)
    path.write_bytes(gzip.compress(content) if gz else content)
    return path


def identifiable_images(count: int, offset: int) -> np.ndarray:
    """Random images whose first two pixels encode ``offset + i``, so each is unique."""
    images = np.random.default_rng(offset).integers(0, 256, (count, 28, 28), dtype=np.uint8)
    ids = np.arange(offset, offset + count)
    images[:, 0, 0], images[:, 0, 1] = ids % 256, ids // 256
    return images


def image_ids(images: np.ndarray) -> set[int]:
    """Inverse of identifiable_images for float images scaled to [0, 1]."""
    pixels = np.rint(images[:, 0, :2, 0] * 255).astype(int)
    return set((pixels[:, 0] + 256 * pixels[:, 1]).tolist())


def write_mnist(directory: Path, num_train: int = 100, num_test: int = 50, gz: bool = True):
    """Writes a valid synthetic MNIST (labels cycle 0..9); returns the arrays written."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        TRAIN_IMAGES: identifiable_images(num_train, 0),
        TRAIN_LABELS: np.arange(num_train, dtype=np.uint8) % 10,
        TEST_IMAGES: identifiable_images(num_test, num_train),
        TEST_LABELS: np.arange(num_test, dtype=np.uint8) % 10,
    }
    for name, array in arrays.items():
        write_file(directory, name, idx_bytes(array), gz)
    return arrays


def data_config() -> ml_collections.ConfigDict:
    """The experiment's ``data`` defaults without a validation split (small test files)."""
    config = get_config().data
    config.val_size = 0
    return config


def idx_config(directory: Path, **overrides) -> ml_collections.ConfigDict:
    config = data_config()
    config.update({"source": "idx", "dir": str(directory), "train_size": 40, **overrides})
    return config


# --- IDX decoding ---------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_idx_round_trip(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    for split, (images_name, labels_name) in {
        "train": (TRAIN_IMAGES, TRAIN_LABELS),
        "test": (TEST_IMAGES, TEST_LABELS),
    }.items():
        images, labels = data.read_idx_split(tmp_path, split)
        assert images.dtype == np.uint8 and images.shape == (*arrays[images_name].shape, 1)
        assert labels.dtype == np.int32
        np.testing.assert_array_equal(images[..., 0], arrays[images_name])
        np.testing.assert_array_equal(labels, arrays[labels_name])


def test_idx_mixed_raw_and_gz(tmp_path):
    arrays = write_mnist(tmp_path, gz=True)
    (tmp_path / f"{TRAIN_LABELS}.gz").unlink()
    write_file(tmp_path, TRAIN_LABELS, idx_bytes(arrays[TRAIN_LABELS]), gz=False)
    _, labels = data.read_idx_split(tmp_path, "train")
    np.testing.assert_array_equal(labels, arrays[TRAIN_LABELS])


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist.*MNIST_DIR"):
        data.read_idx_split(tmp_path / "nowhere", "train")


def test_mnist_dir_that_is_a_file_says_so(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(data.MissingDataError, match=r"file is a file, not a folder.*MNIST_DIR"):
        data.read_idx_split(tmp_path / "file", "train")


def test_check_available_finds_missing_idx_folders_and_files_without_reading(tmp_path):
    """The cheap check train_and_evaluate runs before it writes anything."""
    with pytest.raises(data.MissingDataError, match=r"nowhere does not exist.*MNIST_DIR"):
        data.check_available(idx_config(tmp_path / "nowhere"))
    write_mnist(tmp_path)
    (tmp_path / f"{TEST_LABELS}.gz").unlink()
    with pytest.raises(data.MissingDataError, match=rf"neither {TEST_LABELS} nor {TEST_LABELS}.gz"):
        data.check_available(idx_config(tmp_path))
    (tmp_path / f"{TEST_LABELS}.gz").write_bytes(b"damaged: found, not read")
    assert data.check_available(idx_config(tmp_path)) is None
    with pytest.raises(data.DataError, match="not a valid gzip file"):  # Loading reads it.
        data.load_split(idx_config(tmp_path), "test")
    tfds_config = data_config()
    tfds_config.update(source="tfds", tfds_data_dir=str(tmp_path / "tfds"))
    assert data.check_available(tfds_config) is None  # Checked when it loads (may download).
    assert not (tmp_path / "tfds").exists()


def test_data_errors_are_user_errors():
    """The CLIs print these as one line (agile.paper.cli), not as tracebacks."""
    from agile.errors import UserError

    for error in (data.DataError, data.MissingDataError, data.DataUnavailableError):
        assert issubclass(error, UserError)


def test_missing_file(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / f"{TRAIN_LABELS}.gz").unlink()
    with pytest.raises(FileNotFoundError, match=rf"neither {TRAIN_LABELS} nor {TRAIN_LABELS}\.gz"):
        data.read_idx_split(tmp_path, "train")


def test_wrong_magic_number(tmp_path):
    write_mnist(tmp_path)
    labels = np.zeros(100, np.uint8)
    write_file(tmp_path, TRAIN_LABELS, idx_bytes(labels, magic=IMAGES_MAGIC), gz=True)
    with pytest.raises(ValueError, match=rf"{TRAIN_LABELS}\.gz: wrong magic number 0x00000803"):
        data.read_idx_split(tmp_path, "train")


def test_truncated_file(tmp_path):
    arrays = write_mnist(tmp_path, gz=False)
    content = idx_bytes(arrays[TRAIN_IMAGES])
    write_file(tmp_path, TRAIN_IMAGES, content[:-100], gz=False)
    with pytest.raises(ValueError, match=rf"{TRAIN_IMAGES}: truncated: header says 100 items"):
        data.read_idx_split(tmp_path, "train")


def test_truncated_header(tmp_path):
    write_mnist(tmp_path, gz=False)
    write_file(tmp_path, TRAIN_LABELS, b"\x00\x00", gz=False)
    with pytest.raises(ValueError, match=rf"{TRAIN_LABELS}: truncated"):
        data.read_idx_split(tmp_path, "train")


def test_truncated_gzip(tmp_path):
    write_mnist(tmp_path)
    path = tmp_path / f"{TRAIN_IMAGES}.gz"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ValueError, match=rf"{TRAIN_IMAGES}\.gz: not a valid gzip file"):
        data.read_idx_split(tmp_path, "train")


def test_trailing_bytes(tmp_path):
    arrays = write_mnist(tmp_path)
    write_file(tmp_path, TRAIN_LABELS, idx_bytes(arrays[TRAIN_LABELS]) + b"\x01\x02", gz=True)
    with pytest.raises(ValueError, match=r"2 unexpected bytes after the 100 items"):
        data.read_idx_split(tmp_path, "train")


def test_a_header_with_wrong_dimensions_is_named(tmp_path):
    """#218: a 27-row images header: the message names the header's dimensions, not only the
    bytes that are left over."""
    arrays = write_mnist(tmp_path)
    images = arrays[TRAIN_IMAGES]
    header = (0x0803).to_bytes(4, "big") + np.asarray((len(images), 27, 28), ">u4").tobytes()
    write_file(tmp_path, TRAIN_IMAGES, header + images.tobytes(), gz=True)
    with pytest.raises(ValueError, match=rf"{TRAIN_IMAGES}.gz: {len(images) * 28} unexpected "
                                         rf"bytes after the {len(images)} items the header "
                                         r"declares \(27x28 each\): the header's dimensions do "
                                         r"not match the data"):
        data.read_idx_split(tmp_path, "train")


def test_wrong_image_size(tmp_path):
    write_mnist(tmp_path)
    write_file(tmp_path, TRAIN_IMAGES, idx_bytes(np.zeros((100, 27, 28), np.uint8)), gz=True)
    with pytest.raises(ValueError, match=r"images are 27x28, expected 28x28"):
        data.read_idx_split(tmp_path, "train")


def test_count_mismatch(tmp_path):
    write_mnist(tmp_path)
    write_file(tmp_path, TRAIN_LABELS, idx_bytes(np.zeros(99, np.uint8)), gz=True)
    with pytest.raises(ValueError, match=r"count mismatch.*100 images.*99 labels"):
        data.read_idx_split(tmp_path, "train")


def test_label_out_of_range(tmp_path):
    arrays = write_mnist(tmp_path)
    labels = arrays[TEST_LABELS].copy()
    labels[7] = 12
    write_file(tmp_path, TEST_LABELS, idx_bytes(labels), gz=True)
    with pytest.raises(
        ValueError, match=rf"{TEST_LABELS}\.gz: label 12 at index 7 is outside 0\.\.9"
    ):
        data.read_idx_split(tmp_path, "test")


# --- Sources and configuration --------------------------------------------------------


def test_resolve_source(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_DIR", raising=False)
    config = data_config()
    assert data.resolve_source(config) == "tfds"
    config.dir = str(tmp_path)
    assert data.resolve_source(config) == "idx"
    config.dir = ""
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))
    assert data.resolve_source(config) == "idx"
    config.source = "tfds"
    assert data.resolve_source(config) == "tfds"
    config.source = "csv"
    with pytest.raises(ValueError, match=r"Unknown data.source 'csv'. Valid: auto, idx, tfds."):
        data.resolve_source(config)


def test_unknown_split(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(ValueError, match=r"Unknown split 'validation'. Valid: train, test."):
        data.load_split(idx_config(tmp_path), "validation")


def test_idx_reads_mnist_dir_when_dir_unset(tmp_path, monkeypatch):
    arrays = write_mnist(tmp_path)
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))
    config = data_config()
    config.source = "idx"
    _, labels = data.load_split(config, "train")
    np.testing.assert_array_equal(labels, arrays[TRAIN_LABELS])
    monkeypatch.delenv("MNIST_DIR")
    with pytest.raises(ValueError, match=r"needs a folder.*MNIST_DIR"):
        data.load_split(config, "train")


@pytest.mark.slow
def test_idx_source_does_not_import_tensorflow(tmp_path):
    write_mnist(tmp_path)
    code = textwrap.dedent(
        f"""
        import sys
        from agile.paper import data as data_lib
        from agile.paper.data import images as data
        from agile.paper.config import get_config
        config = get_config().data
        config.update(source="idx", dir={str(tmp_path)!r}, train_size=40, val_size=0,
                      test_size=20)
        data.load_datasets(config)
        tf_modules = ("tensorflow", "tensorflow_datasets")
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in tf_modules)
        assert not loaded, loaded
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "MNIST_DIR"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# --- Subsets --------------------------------------------------------------------------


def test_load_datasets_balanced_disjoint_reproducible(tmp_path):
    write_mnist(tmp_path)
    config = idx_config(tmp_path, val_size=20, test_size=30)
    datasets = data.load_datasets(config)
    for split, size in ((datasets.train, 40), (datasets.val, 20), (datasets.test, 30)):
        assert split.inputs.shape == (size, 28, 28, 1) and split.inputs.dtype == np.float32
        assert split.targets.dtype == np.int32
        np.testing.assert_array_equal(np.bincount(split.targets, minlength=10), [size // 10] * 10)
        assert 0.0 <= split.inputs.min() and split.inputs.max() <= 1.0
    assert not image_ids(datasets.train.inputs) & image_ids(datasets.val.inputs)
    assert image_ids(datasets.test.inputs) <= set(range(100, 150))

    again = data.load_datasets(config)
    for split, same in zip(datasets, again, strict=True):
        np.testing.assert_array_equal(split.inputs, same.inputs)
        np.testing.assert_array_equal(split.targets, same.targets)
    config.subset_seed = 1
    other = data.load_datasets(config)
    assert image_ids(other.train.inputs) != image_ids(datasets.train.inputs)


def test_full_splits_and_no_val(tmp_path):
    write_mnist(tmp_path)
    datasets = data.load_datasets(idx_config(tmp_path, train_size=0))
    assert datasets.val is None
    assert image_ids(datasets.train.inputs) == set(range(100))
    assert image_ids(datasets.test.inputs) == set(range(100, 150))

    held_out = data.load_datasets(idx_config(tmp_path, train_size=None, val_size=30))
    assert len(held_out.train.targets) == 70 and len(held_out.val.targets) == 30
    assert not image_ids(held_out.train.inputs) & image_ids(held_out.val.inputs)


def test_standardize(tmp_path):
    arrays = write_mnist(tmp_path)
    datasets = data.load_datasets(idx_config(tmp_path, train_size=0, standardize=True))
    mnist = data.IMAGE_SETS["mnist"]  # MNIST's own training mean and std: 0.1307, 0.3081
    expected = (arrays[TRAIN_IMAGES][..., None] / 255 - mnist.mean) / mnist.std
    assert datasets.train.inputs.dtype == np.float32
    np.testing.assert_allclose(datasets.train.inputs, expected, rtol=1e-5, atol=1e-5)


def test_train_subset_independent_of_val_size():
    labels = np.arange(1000) % 10
    without_val, _ = data.balanced_split_indices(labels, 100, 0, seed=3)
    with_val, val = data.balanced_split_indices(labels, 100, 200, seed=3)
    np.testing.assert_array_equal(without_val, with_val)
    assert not set(with_val) & set(val)


@pytest.mark.parametrize("field", ["train_size", "val_size", "test_size"])
def test_size_not_divisible_by_10(tmp_path, field):
    config = idx_config(tmp_path / "never-read", **{field: 45})
    with pytest.raises(ValueError, match=rf"data\.{field} must be a non-negative multiple of 10"):
        data.load_datasets(config)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_size": 110}, r"training split .*larger than available: 11 images of digit 0"),
        ({"train_size": 60, "val_size": 50}, r"training split .*larger than available"),
        ({"test_size": 60}, r"test split \(data.test_size=60\).*larger than available"),
    ],
)
def test_subset_larger_than_available(tmp_path, overrides, message):
    write_mnist(tmp_path)
    with pytest.raises(ValueError, match=message):
        data.load_datasets(idx_config(tmp_path, **overrides))


# --- Feeding --------------------------------------------------------------------------


@pytest.mark.parametrize("num_examples", [120, 125])
def test_epoch_indices_permute_each_epoch(num_examples):
    batches = [data_lib.epoch_indices(7, epoch, num_examples, 20) for epoch in range(3)]
    for indices in batches:
        assert indices.shape == (6, 20) and indices.dtype == np.int32
        flat = indices.ravel()
        assert len(set(flat.tolist())) == 120 and flat.min() >= 0 and flat.max() < num_examples
    assert not np.array_equal(batches[0], batches[1])
    assert not np.array_equal(batches[1], batches[2])
    np.testing.assert_array_equal(batches[1], data_lib.epoch_indices(7, 1, num_examples, 20))
    assert not np.array_equal(batches[1], data_lib.epoch_indices(8, 1, num_examples, 20))


def test_epoch_indices_pad_by_wrapping_around():
    dropped = data_lib.epoch_indices(0, 4, 125, 20)
    padded = data_lib.epoch_indices(0, 4, 125, 20, drop_remainder=False)
    assert padded.shape == (7, 20)
    np.testing.assert_array_equal(padded[:6], dropped)
    order = padded.ravel()
    assert set(order[:125].tolist()) == set(range(125))
    np.testing.assert_array_equal(order[125:], order[:15])


def test_epoch_indices_rejects_bad_batch_size():
    with pytest.raises(ValueError, match=r"batch_size must be in 1\.\.num_examples=10"):
        data_lib.epoch_indices(0, 0, 10, 11)


def test_gather_batch_under_jit_matches_numpy():
    rng = np.random.default_rng(0)
    images = rng.random((50, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, 50).astype(np.int32)
    indices = data_lib.epoch_indices(0, 0, 50, 16)[1]
    batch = jax.jit(data_lib.gather_batch)(jax.device_put(images), jax.device_put(labels), indices)
    assert batch["inputs"].dtype == np.float32 and batch["targets"].dtype == np.int32
    np.testing.assert_array_equal(np.asarray(batch["inputs"]), images[indices])
    np.testing.assert_array_equal(np.asarray(batch["targets"]), labels[indices])


# --- tensorflow_datasets source (offline: mocked, or the real builder on local files) ---


@pytest.fixture
def network_attempts(monkeypatch) -> list[str]:
    """Makes every DNS lookup and socket connection in the test fail like a machine without
    network; returns the list of attempts (each ``"lookup HOST"`` or ``"connect ADDRESS"``)."""
    attempts = []

    def lookup(host, *args, **kwargs):
        attempts.append(f"lookup {host}")
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def connect(sock, address, *args, **kwargs):
        attempts.append(f"connect {address}")
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    return attempts


@pytest.fixture
def tfds_serves_mnist_dir(monkeypatch) -> list[str]:
    """Serves the download step of tfds' MNIST builder from the IDX files in MNIST_DIR.

    Only ``DownloadManager.download_and_extract`` is replaced: it maps each requested URL
    to the local file of the same name and hands those to tfds' own ``extract``; the
    builder, extraction, writer and reader are tfds' real code. Returns the URLs requested.
    """
    from tensorflow_datasets.core.download import download_manager

    monkeypatch.setattr(data, "download_host_error", lambda: None)  # served here, not fetched
    mnist_dir = Path(os.environ["MNIST_DIR"])
    requested = []

    def local_file(url: str) -> str:
        requested.append(url)
        name = url.rsplit("/", 1)[-1]
        for candidate in (mnist_dir / name, mnist_dir / name.removesuffix(".gz")):
            if candidate.is_file():
                return str(candidate)
        raise AssertionError(f"tfds asked for {url}, which MNIST_DIR={mnist_dir} lacks")

    def download_and_extract(manager, url_or_urls):
        assert isinstance(url_or_urls, dict), url_or_urls
        return manager.extract({key: local_file(url) for key, url in url_or_urls.items()})

    monkeypatch.setattr(
        download_manager.DownloadManager, "download_and_extract", download_and_extract
    )
    return requested


@pytest.mark.slow
def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    config = data_config()
    config.update(source="tfds", train_size=0)
    with tfds.testing.mock_data(num_examples=30):
        images, labels = data.load_split(config, "train")
        datasets = data.load_datasets(config)
    assert images.dtype == np.uint8 and images.shape == (30, 28, 28, 1)
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() <= 9
    assert datasets.train.inputs.shape == (30, 28, 28, 1)
    assert datasets.train.inputs.dtype == np.float32 and datasets.test.targets.dtype == np.int32


@pytest.mark.slow
def test_tfds_failure_says_to_set_mnist_dir(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def offline_load(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "load", offline_load)
    with pytest.raises(RuntimeError, match=r"no network.*Set MNIST_DIR \(or data\.dir\)"):
        data.read_tfds_split("train")


# tfds downloads in background threads that outlive the first failure, so this runs in its
# own process: no lookup can leak into the next test.
TFDS_LOAD_WITHOUT_NETWORK = textwrap.dedent(
    """
    import socket, sys
    from urllib3.util.retry import Retry
    from agile.paper import data as data_lib
    from agile.paper.data import images as data

    lookups = []

    def lookup(host, *args, **kwargs):
        lookups.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def connect(*args, **kwargs):
        raise AssertionError("connect without a lookup")

    socket.getaddrinfo = lookup
    socket.socket.connect = socket.socket.connect_ex = connect
    Retry.sleep = lambda *args, **kwargs: None  # tfds retries each file 10 times.
    import tensorflow_datasets as tfds
    real_load = tfds.load
    def load(*args, download=True, **kwargs):
        if download:
            print("TFDS_DOWNLOAD_STARTED")
        return real_load(*args, download=download, **kwargs)
    tfds.load = load
    try:
        data.read_tfds_split("test", sys.argv[1])
    except RuntimeError as err:
        print("MESSAGE" + str(err))
    print("LOOKUPS" + ",".join(sorted(set(lookups))))
    """
)


@pytest.mark.slow
def test_tfds_download_without_network_is_one_line_naming_mnist_dir(tmp_path):
    """The real tfds.load, with an empty data_dir, on a machine whose DNS lookups fail: the
    one line comes at once (#52: it took 209 s of tfds' retries), without tfds' retries."""
    pytest.importorskip("tensorflow_datasets")
    result = subprocess.run(
        [sys.executable, "-c", TFDS_LOAD_WITHOUT_NETWORK, str(tmp_path / "tfds")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    message = result.stdout.split("MESSAGE", 1)[1].split("\nLOOKUPS", 1)[0]
    assert re.fullmatch(
        r"tensorflow_datasets could not download MNIST: no network connection "
        r"\(gaierror: \[Errno -?\d+\] Name or service not known\)\. "
        r"Offline\? Set MNIST_DIR \(or data\.dir\) to a folder with the four MNIST IDX files "
        r"\(.*\)\.",
        message,
    ), message
    assert result.stdout.split("LOOKUPS", 1)[1].strip() == "storage.googleapis.com"
    assert "TFDS_DOWNLOAD_STARTED" not in result.stdout  # refused before tfds downloads


@needs_mnist
@pytest.mark.slow
def test_real_tfds_builder_offline_equals_idx_reader(
    tmp_path, network_attempts, tfds_serves_mnist_dir
):
    """tfds' real MNIST builder, its download served from MNIST_DIR, builds both splits into
    an empty data_dir without network; the tfds source then returns exactly the IDX reader's
    arrays, in the IDX order (tfds stores them shuffled; read_tfds_split undoes that)."""
    pytest.importorskip("tensorflow_datasets")
    config = data_config()
    config.update(source="tfds", tfds_data_dir=str(tmp_path / "tfds"))
    for split, size in (("train", 60_000), ("test", 10_000)):
        tfds_images, tfds_labels = data.load_split(config, split)
        idx_images, idx_labels = data.read_idx_split(os.environ["MNIST_DIR"], split)
        assert tfds_images.shape == (size, 28, 28, 1) and tfds_images.dtype == np.uint8
        assert tfds_labels.dtype == np.int32
        np.testing.assert_array_equal(tfds_labels, idx_labels)
        np.testing.assert_array_equal(tfds_images, idx_images)
    assert sorted(url.rsplit("/", 1)[-1] for url in tfds_serves_mnist_dir) == sorted(
        f"{name}.gz" for name in (TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS)
    )
    assert (tmp_path / "tfds" / "mnist").is_dir()
    assert network_attempts == []


# --- Real MNIST (only with MNIST_DIR) -------------------------------------------------


@pytest.fixture
def real_config():
    config = data_config()
    config.update(source="idx", dir=os.environ["MNIST_DIR"])
    return config


@needs_mnist
def test_real_mnist_splits(real_config):
    train_images, train_labels = data.load_split(real_config, "train")
    test_images, test_labels = data.load_split(real_config, "test")
    assert train_images.shape == (60_000, 28, 28, 1) and test_images.shape == (10_000, 28, 28, 1)
    assert len(train_labels) == 60_000 and len(test_labels) == 10_000
    np.testing.assert_array_equal(train_labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    assert abs(train_images.mean(dtype=np.float64) / 255 - 0.1307) < 1e-4


@needs_mnist
def test_real_mnist_default_subset(real_config):
    datasets = data.load_datasets(real_config)
    np.testing.assert_array_equal(np.bincount(datasets.train.targets), [500] * 10)
    assert datasets.val is None and len(datasets.test.targets) == 10_000
    np.testing.assert_array_equal(
        datasets.train.inputs, data.load_datasets(real_config).train.inputs
    )
    real_config.subset_seed = 1
    assert not np.array_equal(datasets.train.inputs, data.load_datasets(real_config).train.inputs)


@needs_mnist
def test_real_mnist_val_disjoint_from_train(real_config):
    _, labels = data.load_split(real_config, "train")
    train, val = data.balanced_split_indices(labels, 5000, 1000, seed=0)
    assert len(train) == 5000 and len(val) == 1000 and not set(train) & set(val)
    np.testing.assert_array_equal(np.bincount(labels[val]), [100] * 10)
