"""Fixtures of the study's tests: a small, learnable synthetic MNIST on disk and a fast config."""

from pathlib import Path

import ml_collections
import pytest
from paper_testing import make_tiny_config

from agile.paper.data.images import write_synthetic_mnist


@pytest.fixture(scope="session")
def synthetic_mnist_dir(tmp_path_factory) -> Path:
    """A folder with a small learnable synthetic MNIST (600 train, 200 test images)."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("synthetic_mnist"))


@pytest.fixture
def tiny_config(synthetic_mnist_dir) -> ml_collections.ConfigDict:
    """A fast config on the synthetic data: 200 train, 100 val, 100 test, batch 50."""
    return make_tiny_config(synthetic_mnist_dir)
