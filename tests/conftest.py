"""Shared test helpers: IDX encoding and a small, learnable synthetic MNIST on disk.

Tests share JAX's persistent compilation cache (``.jax_cache/`` in the checkout, ignored by
git), so a program compiled by one test process, or by a subprocess a test starts, is not
compiled again; results do not depend on it.
"""

import gzip
import importlib.util
import os
import sys
import types
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from agile.paper.config import get_config

# Subprocesses read the environment; this process is configured directly (jax is imported).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      str(Path(__file__).resolve().parents[1] / ".jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))

REPO_ROOT = Path(__file__).resolve().parents[1]  # the checkout the tests run in
BENCHMARKS = REPO_ROOT / "benchmarks"


def load_module(path: Path) -> types.ModuleType:
    """Imports the program at ``path`` (a script, not a package module) as a module of its
    name, with its folder on ``sys.path`` as it has when run (benchmarks import their helper)."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module

IDX_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


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
    """Writes the four gzipped IDX files of a learnable synthetic MNIST into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", num_train, 0), ("test", num_test, 1)):
        labels = (np.arange(count) % 10).astype(np.uint8)
        images_name, labels_name = IDX_NAMES[split]
        for name, array in ((images_name, learnable_images(labels, seed)), (labels_name, labels)):
            (directory / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    return directory


@pytest.fixture(scope="session")
def synthetic_mnist_dir(tmp_path_factory) -> Path:
    """A folder with a small learnable synthetic MNIST (600 train, 200 test images)."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("synthetic_mnist"))


@pytest.fixture
def tiny_config(synthetic_mnist_dir) -> ml_collections.ConfigDict:
    """A fast config on the synthetic data: 200 train, 100 val, 100 test, batch 50."""
    config = get_config(12)
    config.num_epochs = 2
    config.batch_size = 50
    config.log_every_steps = 2
    config.checkpoint_every_steps = 2
    config.data.source = "idx"
    config.data.dir = str(synthetic_mnist_dir)
    config.data.train_size = 200
    config.data.val_size = 100
    config.data.test_size = 100
    config.data.eval_batch_size = 64
    return config
