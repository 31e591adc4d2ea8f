"""Shared test helpers: IDX encoding and a small, learnable synthetic MNIST on disk.

Tests share JAX's persistent compilation cache (``.jax_cache/`` in the checkout, ignored by
git), so a program compiled by one test process, or by a subprocess a test starts, is not
compiled again; results do not depend on it.
"""

import importlib.util
import os
import sys
import types
from pathlib import Path

import jax
import ml_collections
import pytest

from agile.paper.config import get_config
from agile.paper.data import idx_bytes, write_synthetic_mnist  # noqa: F401 (test_data)

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
