"""Image classification data (MNIST, Fashion-MNIST): small balanced subsets that live on the
device.

Both data sets come as the four standard IDX files (``train-images-idx3-ubyte`` ...), read with
numpy alone (the ``idx`` source, offline), or from tensorflow-datasets (``tfds``). An
:class:`ImageSet` describes one of them: its tfds name, the environment variable that names its
offline folder (``MNIST_DIR``, ``FASHION_MNIST_DIR``) and its training pixels' mean and std.

Every loader takes the ``data`` sub-config (defined in :mod:`agile.paper.config`):

- ``name``: ``"mnist"`` or ``"fashion_mnist"`` (:data:`IMAGE_SETS`).
- ``source``: ``"auto"`` (``"idx"`` when ``dir`` or the set's environment variable is set,
  else ``"tfds"``), ``"idx"`` (numpy only; never touches the network or imports TensorFlow)
  or ``"tfds"``.
- ``dir``: folder with the IDX files; ``None`` or empty means the environment variable.
- ``tfds_data_dir``: ``data_dir`` passed to ``tfds.load`` (``None``: its default).
- ``train_size``: balanced training subset size (multiple of 10); 0 or ``None``
  means the full training split (minus the validation images).
- ``val_size``: balanced validation subset held out from the training split,
  disjoint from the training subset (multiple of 10; 0 means none).
- ``test_size``: balanced test subset size; ``None`` or 0 means the full split.
- ``subset_seed``: seed of the numpy RNG that draws the subsets.
- ``standardize``: scale to [0, 1] and then standardise with the set's training mean and
  std; if False only scale to [0, 1].
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import os
import socket
import zlib
from pathlib import Path
from typing import NamedTuple

import ml_collections
import numpy as np

from agile.errors import ConfigError, unknown_value_error
from agile.paper.data import DataError, Datasets, DataUnavailableError, MissingDataError, Split

NUM_CLASSES = 10
SIDE = 28  # images are SIDE x SIDE, one channel
IMAGE_SHAPE = (SIDE, SIDE, 1)
TRAIN_SIZE, TEST_SIZE = 60_000, 10_000  # both sets' standard splits


class ImageSet(NamedTuple):
    """One 28x28 grey 10-class data set in the IDX layout: how to find it and standardise it."""

    name: str  # config.data.name, and the name tensorflow-datasets gives it
    title: str  # as messages and the report write it
    env: str  # environment variable naming the offline IDX folder
    mean: float  # mean and std of the 60,000 training pixels, scaled to [0, 1]
    std: float

    @property
    def hint(self) -> str:
        return (f"Set {self.env} (or data.dir) to a folder with the four {self.title} IDX files "
                "(train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                "t10k-labels-idx1-ubyte, each optionally .gz).")


IMAGE_SETS = {
    "mnist": ImageSet("mnist", "MNIST", "MNIST_DIR", 0.1307, 0.3081),
    "fashion_mnist": ImageSet("fashion_mnist", "Fashion-MNIST", "FASHION_MNIST_DIR",
                              0.2860, 0.3530),
}
MNIST = IMAGE_SETS["mnist"]
SOURCES = ("auto", "idx", "tfds")
SPLITS = ("train", "test")

# IDX magic numbers: two zero bytes, type 0x08 (unsigned byte), number of dims.
_IMAGES_MAGIC = 0x00000803
_LABELS_MAGIC = 0x00000801
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

def image_set(data_config: ml_collections.ConfigDict) -> ImageSet:
    """The :class:`ImageSet` that ``data_config.name`` names."""
    if data_config.name not in IMAGE_SETS:
        raise unknown_value_error("data.name", data_config.name, tuple(IMAGE_SETS))
    return IMAGE_SETS[data_config.name]


def resolve_source(data_config: ml_collections.ConfigDict) -> str:
    """Returns ``"idx"`` or ``"tfds"``, resolving ``"auto"`` from ``dir`` or the set's
    environment variable (``MNIST_DIR``, ``FASHION_MNIST_DIR``)."""
    source = data_config.source
    if source not in SOURCES:
        raise unknown_value_error("data.source", source, SOURCES)
    if source == "auto":
        return "idx" if data_config.dir or os.environ.get(image_set(data_config).env) else "tfds"
    return source


def load_split(data_config: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads a whole split from the configured source.

    Returns uint8 images (N, 28, 28, 1) and int32 labels (N,) in 0..9, the same
    for both sources.
    """
    _check_split(split)
    dataset = image_set(data_config)
    if resolve_source(data_config) == "idx":
        return read_idx_split(_idx_directory(data_config), split, dataset)
    return read_tfds_split(split, data_config.tfds_data_dir, dataset)


def check_available(data_config: ml_collections.ConfigDict) -> None:
    """Raises the error :func:`load_split` would for a missing IDX folder or file, without
    reading any file: cheap enough to run before anything is written. (A damaged file, and
    the tfds source, fail when they load.)"""
    if resolve_source(data_config) == "idx":
        dataset = image_set(data_config)
        directory = _checked_idx_folder(_idx_directory(data_config), dataset)
        for names in _IDX_FILES.values():
            for name in names:
                _find_idx_file(directory, name, dataset)


def _idx_directory(data_config: ml_collections.ConfigDict) -> str:
    dataset = image_set(data_config)
    directory = data_config.dir or os.environ.get(dataset.env)
    if not directory:
        raise ConfigError(f"data.source='idx' needs a folder. {dataset.hint}")
    return directory


def _checked_idx_folder(directory: str | os.PathLike, dataset: ImageSet = MNIST) -> Path:
    """``directory`` as a Path; MissingDataError unless it is an existing folder."""
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise MissingDataError(f"{dataset.title} directory {directory} is a file, not a folder. "
                               f"{dataset.hint}")
    if not directory.is_dir():
        raise MissingDataError(
            f"{dataset.title} directory {directory} does not exist. {dataset.hint}"
        )
    return directory


def read_idx_split(directory: str | os.PathLike, split: str,
                   dataset: ImageSet = MNIST) -> tuple[np.ndarray, np.ndarray]:
    """Reads one split from the standard IDX files in ``directory`` (raw or ``.gz``).

    Uses numpy only. Raises MissingDataError (a FileNotFoundError) for a missing folder
    or file and DataError (a ValueError), naming the file, for a damaged or inconsistent one.
    """
    _check_split(split)
    directory = _checked_idx_folder(directory, dataset)
    images_name, labels_name = _IDX_FILES[split]
    images_path = _find_idx_file(directory, images_name, dataset)
    labels_path = _find_idx_file(directory, labels_name, dataset)
    images = _read_idx(images_path, _IMAGES_MAGIC)
    labels = _read_idx(labels_path, _LABELS_MAGIC)
    if images.shape[1:] != IMAGE_SHAPE[:2]:
        raise DataError(
            f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28"
        )
    if len(images) != len(labels):
        raise DataError(
            f"image/label count mismatch: {images_path} has {len(images)} images "
            f"but {labels_path} has {len(labels)} labels"
        )
    _check_labels(labels, str(labels_path))
    return images[..., None], labels.astype(np.int32)


def read_tfds_split(split: str, data_dir: str | None = None,
                    dataset: ImageSet = MNIST) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of tensorflow_datasets ``dataset.name`` (downloading it if needed).

    Returns the same arrays as :func:`read_idx_split` on the IDX files, in the same
    order (see :func:`_tfds_mnist_order`), so both sources draw the same subsets.
    TensorFlow is imported here, not at module level, so the IDX path never loads
    it; GPUs are hidden from it so it does not claim accelerator memory. Raises
    RuntimeError, one line, when tfds cannot load MNIST; without network it says so
    and names the offline route (``MNIST_DIR``).
    """
    _check_split(split)
    import tensorflow as tf
    import tensorflow_datasets as tfds

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        pass  # TensorFlow already initialised its devices; they can no longer change.
    load = functools.partial(
        tfds.load, dataset.name, split=split, data_dir=data_dir, as_supervised=True,
        shuffle_files=False,
        read_config=tfds.ReadConfig(interleave_cycle_length=1),  # Shards in order.
    )
    try:
        dataset_ = load(download=False)  # prepared already: no network at all
    except Exception:  # noqa: BLE001 - not prepared (or unreadable): tfds must download.
        unreachable = download_host_error()  # tfds would retry for minutes first
        if unreachable is not None:
            raise _tfds_error(unreachable, dataset) from None
        try:
            stored = load()
        except Exception as err:
            raise _tfds_error(err, dataset) from err
    else:
        stored = dataset_
    batches = list(tfds.as_numpy(stored.batch(10_000)))
    stored_images = np.concatenate([batch_images for batch_images, _ in batches])
    stored_labels = np.concatenate([batch_labels for _, batch_labels in batches])
    images = np.empty_like(stored_images, np.uint8)
    labels = np.empty_like(stored_labels, np.int32)
    order = _tfds_mnist_order(split, len(stored_labels))
    images[order], labels[order] = stored_images, stored_labels
    _check_labels(labels, f"tfds {dataset.name} {split!r}")
    return images.reshape(-1, *IMAGE_SHAPE), labels


TFDS_MNIST_HOST = ("storage.googleapis.com", 443)  # where tfds' MNIST builder downloads from
PROBE_TIMEOUT_S = 5.0


def download_host_error() -> OSError | None:
    """Why tfds' MNIST download host cannot be reached (one connection attempt), or None."""
    try:
        socket.create_connection(TFDS_MNIST_HOST, timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        return err
    return None


def _tfds_mnist_order(split: str, num_examples: int) -> np.ndarray:
    """The IDX index of each example in tfds' stored order of MNIST ``split``.

    tfds' MNIST builder keys the i-th example of the IDX file by ``i``, and its
    writer stores a split sorted by the md5 of the split name followed by the key
    (tensorflow_datasets/core/hashing.py). The test on real MNIST checks this
    against the IDX reader.
    """

    def stored_position(index: int) -> bytes:
        return hashlib.md5(f"{split}{index}".encode()).digest()

    return np.array(sorted(range(num_examples), key=stored_position), dtype=np.int64)


def _tfds_error(err: Exception, dataset: ImageSet = MNIST) -> DataUnavailableError:
    """One line for a failed ``tfds.load``; a download without network says so."""
    network_error = _network_error_in_chain(err)
    if network_error is None:
        return DataUnavailableError(
            f"could not load {dataset.title} with tensorflow_datasets ({type(err).__name__}: "
            f"{err}). {dataset.hint}"
        )
    return DataUnavailableError(
        f"tensorflow_datasets could not download {dataset.title}: no network connection "
        f"({type(network_error).__name__}: {network_error}). Offline? {dataset.hint}"
    )


def _network_error_in_chain(err: BaseException | None) -> BaseException | None:
    """Returns the innermost connection, DNS or timeout error among ``err`` and its causes."""
    found, seen = None, set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if _is_network_error(err):
            found = err
        err = err.__cause__ or err.__context__
    return found


def _is_network_error(err: BaseException) -> bool:
    """True for socket-level failures and for requests'/urllib3's connection errors."""
    if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror, socket.herror)):
        return True
    module = type(err).__module__.split(".")[0]
    name = type(err).__name__
    return module in ("requests", "urllib3") and any(
        word in name for word in ("Connection", "Timeout", "NameResolution")
    )


def balanced_split_indices(
    labels: np.ndarray,
    size: int | None,
    held_out_size: int | None,
    seed: int,
    where: str = "labels",
) -> tuple[np.ndarray, np.ndarray]:
    """Draws disjoint class-balanced index sets ``(subset, held_out)``, each sorted.

    For each digit the seeded RNG permutes that digit's indices; the subset takes
    ``size // 10`` from the front and the held-out set ``held_out_size // 10``
    from the back, so either set does not depend on the other's size. ``size``
    0 or None keeps every index not held out. Bit-for-bit reproducible for a seed.
    ``where`` names the labels' origin in error messages.
    """
    subset_per_class = _per_class(f"{where}: size", size) if size else None
    held_out_per_class = _per_class(f"{where}: held_out_size", held_out_size or 0)
    rng = np.random.default_rng(seed)
    subset, held_out = [], []
    for digit in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == digit))
        needed = (subset_per_class or 0) + held_out_per_class
        if needed > members.size:
            raise DataError(
                f"{where}: subset larger than available: {needed} images of digit {digit} "
                f"needed, but only {members.size} exist"
            )
        kept = members[: members.size - held_out_per_class]
        held_out.append(members[members.size - held_out_per_class :])
        subset.append(kept if subset_per_class is None else kept[:subset_per_class])
    return np.sort(np.concatenate(subset)), np.sort(np.concatenate(held_out))


def scale_images(images: np.ndarray, standardize: bool, dataset: ImageSet = MNIST) -> np.ndarray:
    """Maps uint8 pixels to float32 in [0, 1], then optionally to zero mean, unit std (the
    set's own training mean and std)."""
    scaled = images.astype(np.float32) / np.float32(255)
    if standardize:
        scaled = (scaled - np.float32(dataset.mean)) / np.float32(dataset.std)
    return scaled


def check_sizes(config: ml_collections.ConfigDict) -> None:
    """ConfigError for subset sizes the set cannot give, or a batch larger than the training
    subset: before anything is read."""
    data, title = config.data, image_set(config.data).title
    if data.source not in SOURCES:
        raise unknown_value_error("data.source", data.source, SOURCES)
    for name in ("train_size", "val_size", "test_size"):
        value = data[name]
        optional = value is None and name == "test_size"
        if not optional and (isinstance(value, bool) or not isinstance(value, int) or value < 0
                             or value % NUM_CLASSES):
            raise ConfigError(f"config.data.{name} must be a non-negative multiple of "
                              f"{NUM_CLASSES} (a class-balanced subset), got {value!r}.")
    if data.train_size + data.val_size > TRAIN_SIZE:
        raise ConfigError(f"config.data.train_size + val_size = {data.train_size + data.val_size}"
                          f" exceeds {title}'s {TRAIN_SIZE} training images.")
    if (data.test_size or 0) > TEST_SIZE:
        raise ConfigError(f"config.data.test_size = {data.test_size} exceeds {title}'s "
                          f"{TEST_SIZE} test images.")
    train_images = data.train_size or TRAIN_SIZE - data.val_size
    if config.batch_size > train_images:
        raise ConfigError(f"config.batch_size = {config.batch_size} exceeds the "
                          f"{train_images} training images.")


def load_datasets(data_config: ml_collections.ConfigDict) -> Datasets:
    """Loads the train/val/test subsets described by ``data_config`` as numpy arrays.

    Images are float32 (N, 28, 28, 1), already scaled (and standardised if
    asked); labels are int32. The caller moves them to the device.
    """
    for name in ("train_size", "val_size", "test_size"):
        if data_config[name]:
            _per_class(f"data.{name}", data_config[name])  # Fail before reading any file.
    train_size, val_size = data_config.train_size, data_config.val_size
    train_images, train_labels = load_split(data_config, "train")
    train_indices, val_indices = balanced_split_indices(
        train_labels,
        train_size,
        val_size,
        data_config.subset_seed,
        where=f"training split (data.train_size={train_size}, data.val_size={val_size})",
    )
    test_images, test_labels = load_split(data_config, "test")
    test_indices, _ = balanced_split_indices(
        test_labels,
        data_config.test_size,
        0,
        data_config.subset_seed,
        where=f"test split (data.test_size={data_config.test_size})",
    )

    def subset(images: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> Split:
        return Split(scale_images(images[indices], data_config.standardize,
                                  image_set(data_config)), labels[indices])

    return Datasets(
        train=subset(train_images, train_labels, train_indices),
        val=subset(train_images, train_labels, val_indices) if val_indices.size else None,
        test=subset(test_images, test_labels, test_indices),
    )


def _find_idx_file(directory: Path, name: str, dataset: ImageSet = MNIST) -> Path:
    """Returns ``directory/name`` or, failing that, ``directory/name.gz``."""
    for candidate in (directory / name, directory / f"{name}.gz"):
        try:
            if candidate.is_file():
                return candidate
        except OSError as err:  # a folder this user may not enter: a reading problem
            raise DataError(f"Cannot read {dataset.title} folder {directory}: {err.strerror}. "
                            "Make it readable (and enterable) for this user.") from None
    raise MissingDataError(
        f"missing {dataset.title} file: neither {name} nor {name}.gz is in {directory}. "
        f"{dataset.hint}"
    )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """Decodes an unsigned-byte IDX file, checking its magic number and length."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DataError(f"Cannot read {path}: {err.strerror}. Make the file readable for this "
                        "user.") from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{path}: not a valid gzip file ({err})") from err
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < 4:
        raise DataError(f"{path}: truncated: {len(data)} bytes, too short for an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(
            f"{path}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
        )
    if len(data) < header_size:
        raise DataError(f"{path}: truncated header ({len(data)} of {header_size} bytes)")
    shape = tuple(int(size) for size in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = math.prod(shape)
    available = len(data) - header_size
    if available < expected:
        raise DataError(
            f"{path}: truncated: header says {shape[0]} items ({expected} bytes) "
            f"but only {available} bytes follow"
        )
    if available > expected:
        dims = "x".join(map(str, shape[1:]))
        raise DataError(
            f"{path}: {available - expected} unexpected bytes after the {shape[0]} items "
            f"the header declares{f' ({dims} each)' if dims else ''}: the header's dimensions "
            "do not match the data, or data follows it"
        )
    return np.frombuffer(data, np.uint8, count=expected, offset=header_size).reshape(shape)


def _check_labels(labels: np.ndarray, where: str) -> None:
    """Raises DataError naming ``where`` if any label is outside 0..9."""
    bad = np.flatnonzero((labels < 0) | (labels >= NUM_CLASSES))
    if bad.size:
        raise DataError(
            f"{where}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside "
            f"0..{NUM_CLASSES - 1}"
        )


def _check_split(split: str) -> None:
    """Raises ConfigError unless ``split`` is "train" or "test"."""
    if split not in SPLITS:
        raise unknown_value_error("split", split, SPLITS)


def _per_class(name: str, size: int) -> int:
    """Returns ``size // 10``, rejecting sizes that cannot be split evenly by class."""
    if size < 0 or size % NUM_CLASSES:
        raise DataError(
            f"{name} must be a non-negative multiple of {NUM_CLASSES} for a class-balanced "
            f"subset, got {size}"
        )
    return size // NUM_CLASSES


# ---------------------------------------------------------------------------------------------
# A synthetic MNIST in the real files' format.


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """Encodes a uint8 array as IDX; ``magic`` overrides the correct magic number."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = magic.to_bytes(4, "big") + np.asarray(array.shape, ">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def learnable_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """Noisy 28x28 images with a bright 6x6 block whose position encodes the label."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = 4 + 12 * (label // 5), 1 + 5 * (label % 5)
        images[i, row : row + 6, col : col + 6] = 255
    return images


def write_synthetic_mnist(directory: Path, num_train: int = 600, num_test: int = 200) -> Path:
    """Writes the four gzipped IDX files of a learnable synthetic MNIST into ``directory``,
    for tests and benchmarks on machines without the real data (labels cycle 0..9)."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", num_train, 0), ("test", num_test, 1)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images_name, labels_name = _IDX_FILES[split]
        for name, array in ((images_name, learnable_images(labels, seed)), (labels_name, labels)):
            (directory / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    return directory
