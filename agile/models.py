"""The paper's CNN: three conv -> activation -> pooling blocks, a hidden dense layer, logits."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from agile.activations import is_agile_name, validate_activation_name
from agile.layers import activation_layer, parameter_shape

POOLINGS = ("max", "avg")


class CNN(nn.Module):
    """Kong, Ko & Ko (2020) MNIST CNN with configurable (agile) activations.

    Conv layers use SAME padding; pooling is VALID with stride = window, so a
    7x7 map pools to 3x3. Agile activations get one (a, b) pair per element by
    default (per feature-map position and channel; per dense node).
    """

    conv_features: Sequence[int] = (16, 8, 4)
    kernel_size: tuple[int, int] = (3, 3)
    pool_size: tuple[int, int] = (2, 2)
    pooling: str = "max"
    dense_features: int = 30
    num_classes: int = 10
    conv_activation: str = "relu"
    dense_activation: str = "relu"
    granularity: str = "element"

    def validate(self) -> None:
        """Raises ValueError for a bad field, before anything is traced."""
        validate_activation_name(self.conv_activation)
        validate_activation_name(self.dense_activation)
        parameter_shape((1, 1), self.granularity)
        if self.pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling {self.pooling!r}. Valid: {', '.join(POOLINGS)}.")
        if not self.conv_features or any(int(f) < 1 for f in self.conv_features):
            raise ValueError(f"conv_features must be positive integers, got {self.conv_features}.")

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        """Maps images (N, H, W, C) to logits (N, num_classes)."""
        self.validate()
        x = images
        pool = nn.max_pool if self.pooling == "max" else nn.avg_pool
        for i, features in enumerate(self.conv_features):
            x = nn.Conv(features, self.kernel_size, padding="SAME", name=f"conv_{i}")(x)
            x = self._activation(self.conv_activation, f"conv_act_{i}")(x)
            x = pool(x, self.pool_size, strides=self.pool_size, padding="VALID")
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.dense_features, name="hidden")(x)
        x = self._activation(self.dense_activation, "hidden_act")(x)
        return nn.Dense(self.num_classes, name="output")(x)

    def _activation(self, activation: str, name: str):
        """A named ``Agile`` layer for agile names, the plain function otherwise."""
        if is_agile_name(activation):
            return activation_layer(activation, self.granularity, name=name)
        return activation_layer(activation, self.granularity)


def count_params(params) -> int:
    """Total number of scalars in a parameter tree."""
    return sum(int(jnp.size(p)) for p in jax.tree.leaves(params))
