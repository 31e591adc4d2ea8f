"""Fixtures of the study's tests: a small, learnable synthetic MNIST on disk and a fast config."""

from pathlib import Path

import ml_collections
import pytest

from agile.paper.config import get_config
from agile.paper.data.images import write_synthetic_mnist


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
